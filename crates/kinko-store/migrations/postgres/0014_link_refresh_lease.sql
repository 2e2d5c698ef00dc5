-- One refresh of a link's tokens at a time across every `kinko serve` process: a process
-- takes the lease (a conditional update) before it spends the refresh token and gives it back
-- with the rotated one, so no two processes ever present the same refresh token (the bank
-- reads that as theft and ends the link). A lease that outlives its process expires.
ALTER TABLE banking_links ADD COLUMN refresh_lease_until BIGINT;
