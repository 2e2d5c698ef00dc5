-- Issue 13, item 7: notices of a contact change go to the contacts as they were before the
-- first change of the cool-off, not to the address or number the change just set (a thief
-- who changed the e-mail first must not receive the notice of the phone change).
ALTER TABLE identity_users ADD COLUMN notice_email TEXT;
ALTER TABLE identity_users ADD COLUMN notice_phone TEXT;
ALTER TABLE identity_users ADD COLUMN notice_until INTEGER;
