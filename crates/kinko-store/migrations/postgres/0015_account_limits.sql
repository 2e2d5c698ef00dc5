-- The bank's charge limits count per bank account across every link and wallet (issue 11
-- item 5): the sums look links up by the account's pairwise reference.
CREATE INDEX banking_links_account ON banking_links (bank_code, account_ref);
