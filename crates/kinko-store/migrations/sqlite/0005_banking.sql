-- Partner banks and their policies: each bank's switches (linking, charging, the legacy PIN
-- method) and limits, read on every request so a change applies to the next one.
CREATE TABLE banking_partner_banks (
    code TEXT PRIMARY KEY NOT NULL CHECK (length(code) = 4),
    name_ja TEXT NOT NULL,
    name_kana TEXT NOT NULL,
    name_roma TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE banking_policies (
    bank_code TEXT PRIMARY KEY NOT NULL REFERENCES banking_partner_banks (code),
    linking_enabled INTEGER NOT NULL CHECK (linking_enabled IN (0, 1)),
    charging_enabled INTEGER NOT NULL CHECK (charging_enabled IN (0, 1)),
    legacy_enabled INTEGER NOT NULL CHECK (legacy_enabled IN (0, 1)),
    charge_max_yen INTEGER NOT NULL CHECK (charge_max_yen >= 0),
    daily_max_yen INTEGER NOT NULL CHECK (daily_max_yen >= charge_max_yen),
    monthly_max_yen INTEGER NOT NULL CHECK (monthly_max_yen >= daily_max_yen),
    new_link_daily_max_yen INTEGER NOT NULL CHECK (new_link_daily_max_yen BETWEEN 0 AND daily_max_yen),
    new_link_period_days INTEGER NOT NULL CHECK (new_link_period_days BETWEEN 0 AND 90),
    new_link_wait_hours INTEGER NOT NULL CHECK (new_link_wait_hours BETWEEN 0 AND 720),
    version INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
