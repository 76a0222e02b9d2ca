-- Each pending sign-up keeps its password with its own verification code, so
-- a code activates only the password that was registered with it: a later
-- `register` for the same unverified email can no longer swap the password
-- that the first registrant's code opens (issue #11, item 2). Reset codes
-- carry none. Codes that were live before this migration open the password
-- their account holds now.
ALTER TABLE one_time_codes ADD COLUMN password_hash text;
UPDATE one_time_codes c SET password_hash = u.password_hash
FROM users u WHERE u.email = c.email AND c.purpose = 'verify';
DELETE FROM one_time_codes WHERE purpose = 'verify' AND password_hash IS NULL;
ALTER TABLE one_time_codes
    ADD CONSTRAINT otp_signup_has_password CHECK ((purpose = 'verify') = (password_hash IS NOT NULL));

-- Wrong tries are counted in Redis per email and purpose (limits.rs), for
-- known and unknown emails alike, so the per-code counter is gone.
ALTER TABLE one_time_codes DROP COLUMN attempts;
