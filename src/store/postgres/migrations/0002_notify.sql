-- Every append notifies the channel replicas listen on, with the new head's
-- position, so they follow each other's writes at once and ignore their own
-- (they read the log after their head whatever the notification says, and
-- poll as well: it is only a wake-up).
CREATE FUNCTION ledger_notify_append() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ledger_appended', NEW.position::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER ledger_head_moved AFTER UPDATE ON ledger_head
    FOR EACH ROW EXECUTE FUNCTION ledger_notify_append();
