"""PostgreSQL only: full-text search documents and the change notification (no-op on SQLite)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

SQLite keeps its FTS5 table `ticket_text` (0001).  On PostgreSQL each ticket has one
`tsvector` document in `ticket_search`, kept current by triggers.  Words are what the
SQLite side calls words: lower-cased, accents folded (NFKD without combining marks),
runs of letters and digits.  Between the ticket subject, each message subject and each
body the word positions leave a gap (a separator token, deleted again), so a phrase
never spans two of them.  Bulk writers `SET LOCAL supportdesk.search_pause = 'on'`
and rebuild the documents of the tickets they wrote with `supportdesk_search_document`.

Every committed change to the tables the console shows sends one NOTIFY on
`supportdesk_changes` (PostgreSQL folds repeats within a transaction): the console's
"something changed" signal.
"""
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

SEPARATOR = "sep@sep.sep"  # an e-mail token: never a word of normalised text, which has no '@'
COMBINING = r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]"
# Every table (as SQLite's data_version counts every commit); a later migration that adds a
# table gives it the same trigger: CREATE TRIGGER <table>_notify … EXECUTE FUNCTION supportdesk_notify_change().
EACH_TABLE = """DO $$ DECLARE t text; BEGIN
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema()
             AND tablename NOT IN ('alembic_version', 'ticket_search') LOOP
        EXECUTE format({statement}, t || '_notify', t);
    END LOOP;
END $$"""
PAUSED = "coalesce(current_setting('supportdesk.search_pause', true), '') = 'on'"

POSTGRESQL_UP = [
    # ASCII text (most mail) skips normalize(); one expression, so PostgreSQL inlines the function.
    f"""CREATE FUNCTION supportdesk_search_text(value text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT CASE WHEN octet_length(coalesce(value, '')) = char_length(coalesce(value, ''))
                    THEN regexp_replace(lower(coalesce(value, '')), '[^[:alnum:]]+', ' ', 'g')
                    ELSE regexp_replace(regexp_replace(normalize(lower(value), NFKD), E'{COMBINING}', '', 'g'),
                                        '[^[:alnum:]]+', ' ', 'g')
               END
    $$""",
    f"""CREATE FUNCTION supportdesk_search_part(subject text, body text) RETURNS tsvector
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT ts_delete(to_tsvector('simple', ' {SEPARATOR} ' || supportdesk_search_text(subject)
                                               || ' {SEPARATOR} ' || supportdesk_search_text(body)), '{SEPARATOR}')
    $$""",
    f"""CREATE FUNCTION supportdesk_search_document(ticket integer) RETURNS tsvector
        LANGUAGE sql STABLE AS $$
        SELECT ts_delete(to_tsvector('simple', supportdesk_search_text(t.subject) || coalesce((
                   SELECT string_agg(' {SEPARATOR} ' || supportdesk_search_text(m.subject)
                                     || ' {SEPARATOR} ' || supportdesk_search_text(m.body_text), '' ORDER BY m.id)
                   FROM messages m WHERE m.ticket_id = t.id), '')), '{SEPARATOR}')
        FROM tickets t WHERE t.id = ticket
    $$""",
    """CREATE TABLE ticket_search (
        ticket_id integer PRIMARY KEY REFERENCES tickets (id) ON DELETE CASCADE,
        document tsvector NOT NULL
    )""",
    "CREATE INDEX ix_ticket_search_document ON ticket_search USING gin (document)",
    f"""CREATE FUNCTION supportdesk_search_tickets() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF {PAUSED} THEN RETURN NULL; END IF;
        IF TG_OP = 'INSERT' THEN
            INSERT INTO ticket_search (ticket_id, document)
            VALUES (NEW.id, to_tsvector('simple', supportdesk_search_text(NEW.subject)))
            ON CONFLICT (ticket_id) DO UPDATE SET document = supportdesk_search_document(NEW.id);
        ELSIF NEW.subject IS DISTINCT FROM OLD.subject THEN
            UPDATE ticket_search SET document = supportdesk_search_document(NEW.id) WHERE ticket_id = NEW.id;
        END IF;
        RETURN NULL;
    END $$""",
    f"""CREATE FUNCTION supportdesk_search_messages() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF {PAUSED} THEN RETURN NULL; END IF;
        IF TG_OP = 'INSERT' THEN
            UPDATE ticket_search SET document = document || supportdesk_search_part(NEW.subject, NEW.body_text)
            WHERE ticket_id = NEW.ticket_id;
            RETURN NULL;
        END IF;
        IF TG_OP = 'UPDATE' AND NEW.ticket_id = OLD.ticket_id AND NEW.subject IS NOT DISTINCT FROM OLD.subject
           AND NEW.body_text IS NOT DISTINCT FROM OLD.body_text THEN
            RETURN NULL;
        END IF;
        UPDATE ticket_search SET document = supportdesk_search_document(ticket_id) WHERE ticket_id = OLD.ticket_id;
        IF TG_OP = 'UPDATE' AND NEW.ticket_id <> OLD.ticket_id THEN
            UPDATE ticket_search SET document = supportdesk_search_document(ticket_id) WHERE ticket_id = NEW.ticket_id;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER ticket_search_t AFTER INSERT OR UPDATE OF subject ON tickets
        FOR EACH ROW EXECUTE FUNCTION supportdesk_search_tickets()""",
    """CREATE TRIGGER ticket_search_m AFTER INSERT OR UPDATE OF ticket_id, subject, body_text OR DELETE ON messages
        FOR EACH ROW EXECUTE FUNCTION supportdesk_search_messages()""",
    "INSERT INTO ticket_search (ticket_id, document) SELECT id, supportdesk_search_document(id) FROM tickets",
    """CREATE FUNCTION supportdesk_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('supportdesk_changes', '');
        RETURN NULL;
    END $$""",
    EACH_TABLE.format(statement="'CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I "
                                "FOR EACH STATEMENT EXECUTE FUNCTION supportdesk_notify_change()'"),
]

POSTGRESQL_DOWN = [
    EACH_TABLE.format(statement="'DROP TRIGGER IF EXISTS %I ON %I'"),
    "DROP FUNCTION IF EXISTS supportdesk_notify_change()",
    "DROP TRIGGER IF EXISTS ticket_search_m ON messages",
    "DROP TRIGGER IF EXISTS ticket_search_t ON tickets",
    "DROP FUNCTION IF EXISTS supportdesk_search_messages()",
    "DROP FUNCTION IF EXISTS supportdesk_search_tickets()",
    "DROP TABLE IF EXISTS ticket_search",
    "DROP FUNCTION IF EXISTS supportdesk_search_document(integer)",
    "DROP FUNCTION IF EXISTS supportdesk_search_part(text, text)",
    "DROP FUNCTION IF EXISTS supportdesk_search_text(text)",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRESQL_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRESQL_DOWN:
            op.execute(statement)
