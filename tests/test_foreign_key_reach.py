"""A foreign key into a table a delete rule deletes from, wherever the referencing table is:
in another database of the MariaDB server (its cascade would delete there, unrecorded), in
another schema of the PostgreSQL database, or named so that SQL quotes it. A child is the
table the store reaches by the child's name (its own database; PostgreSQL's search_path, the
store URL's own included): a same-named table elsewhere is another table, and one the store
cannot reach by name cannot be a child at all, which the error says."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError

from retention.cli import main
from retention.errors import ExitCode
from retention.stores.sql_dialect import create_sql_engine
from tests.support import config_text, remaining_ids
from tests.test_foreign_keys import CLIENTS_RULE as INVOICED_CLIENTS_RULE

# The foreign-key tests' clients rule, its child the orders (its grandchild more children).
CLIENTS_RULE = INVOICED_CLIENTS_RULE.replace('table = "invoices"', 'table = "orders"').replace(
    "{grandchild}", "{more_children}"
)
COMMANDS = (["config", "validate"], ["plan"], ["run", "--yes", "--dry-run"], ["run", "--yes"])


def _cli(config: Path, *arguments: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *arguments])


def _config(tmp_path: Path, url: str, *, extra: str = "", more_children: str = "") -> Path:
    config = tmp_path / "retention.toml"
    rule = CLIENTS_RULE.format(extra=extra, more_children=more_children)
    config.write_text(config_text(url, rule, audit_directory=tmp_path / "audit"))
    return config


def _refused_everywhere(config: Path) -> list[str]:
    """The one error at which validate, plan, a dry run and a run each stop (exit 78)."""
    errors = []
    for command in COMMANDS:
        result = _cli(config, *command)
        assert result.exit_code == ExitCode.BAD_CONFIG, (command, result.output)
        (error,) = _errors(result)
        errors.append(error)
    return errors


def _errors(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def _run(engine: Engine, *statements: str) -> None:
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))


def _mariadb_clients(url: str, other_url: str, on_delete: str) -> tuple[Engine, Engine, str]:
    """The store's clients 1 and 2, ended long ago, and its own orders (listed as the rule's
    child, by client_id); in another database of the server, orders of the same name that
    reference the store's clients with ``on_delete``: order 20 references client 2."""
    store, other = create_engine(url), create_engine(other_url)
    database = make_url(url).database
    _run(
        store,
        "CREATE TABLE clients (id INT PRIMARY KEY, ended_at DATETIME NOT NULL)",
        "CREATE TABLE orders (id INT PRIMARY KEY, client_id INT NOT NULL, "
        "FOREIGN KEY (client_id) REFERENCES clients (id))",
        "INSERT INTO clients VALUES (1, '2020-01-01'), (2, '2020-01-01')",
        "INSERT INTO orders VALUES (10, 1)",
    )
    _run(
        other,
        "CREATE TABLE orders (id INT PRIMARY KEY, client_id INT, CONSTRAINT orders_elsewhere_fk "
        f"FOREIGN KEY (client_id) REFERENCES `{database}`.clients (id) ON DELETE {on_delete})",
        "INSERT INTO orders VALUES (20, 2)",
    )
    other_database = make_url(other_url).database
    assert other_database is not None
    return store, other, other_database


@pytest.mark.parametrize("on_delete", ["CASCADE", "SET NULL"])
def test_a_key_from_another_database_is_refused_it_cannot_be_a_child(
    mariadb_url: str, mariadb_second_url: str, tmp_path: Path, on_delete: str
) -> None:
    """The other database's orders would lose (or have rewritten) their rows with the store's
    clients, unrecorded, and the rule's child of that name is the store's own orders: validate,
    plan, a dry run and a run each refuse the rule (exit 78), naming the table with its
    database and saying it cannot be a child; nothing goes, in either database."""
    store, other, elsewhere = _mariadb_clients(mariadb_url, mariadb_second_url, on_delete)
    config = _config(tmp_path, mariadb_url)
    for error in _refused_everywhere(config):
        assert error.startswith(
            f"error: rules[0].table: '{elsewhere}.orders' references 'clients' (client_id) "
            f"with ON DELETE {on_delete} (constraint orders_elsewhere_fk): "
        )
        assert "list it in" not in error
        assert error.endswith(
            f"({elsewhere}.orders cannot be listed in children: a child is a table the store "
            "reaches by its name alone (in the store's own database; on PostgreSQL, the first "
            f"of that name on its search_path), and {elsewhere}.orders is not one)"
        )
    assert remaining_ids(store, "clients") == {1, 2}
    assert remaining_ids(store, "orders") == {10}
    with other.connect() as connection:
        assert connection.execute(text("SELECT id, client_id FROM orders")).all() == [(20, 2)]


def test_a_key_whose_action_the_stores_user_cannot_read_is_refused(
    mariadb_url: str, mariadb_second_url: str, mariadb_admin: Engine, tmp_path: Path
) -> None:
    """A store user with a privilege on the other database's orders table only sees the key
    but not its ON DELETE (MariaDB hides it): refused, saying what to grant. Granted that on
    the database, it reads CASCADE, refused as such."""
    _, _, elsewhere = _mariadb_clients(mariadb_url, mariadb_second_url, "CASCADE")
    database = make_url(mariadb_url).database
    user = f"retention_fk_{secrets.token_hex(4)}"
    _run(
        mariadb_admin,
        f"CREATE USER '{user}'@'%'",
        f"GRANT SELECT, DELETE, UPDATE ON `{database}`.* TO '{user}'@'%'",
        f"GRANT SELECT ON `{elsewhere}`.orders TO '{user}'@'%'",
    )
    try:
        url = make_url(mariadb_url).set(username=user, password=None)
        config = _config(tmp_path, url.render_as_string(hide_password=False))
        result = _cli(config, "config", "validate")
        assert result.exit_code == ExitCode.BAD_CONFIG, result.output
        (error,) = _errors(result)
        assert error.startswith(
            f"error: rules[0].table: '{elsewhere}.orders' references 'clients' (client_id) with "
            "an ON DELETE the store's user cannot read (constraint orders_elsewhere_fk): it may "
            "delete or rewrite rows unrecorded; grant the store's user a privilege on database "
            f"{elsewhere} as a whole (GRANT REFERENCES ON {elsewhere}.* will do) "
        )
        _run(mariadb_admin, f"GRANT REFERENCES ON `{elsewhere}`.* TO '{user}'@'%'")
        result = _cli(config, "config", "validate")
        assert result.exit_code == ExitCode.BAD_CONFIG, result.output
        (error,) = _errors(result)
        assert "with ON DELETE CASCADE (constraint orders_elsewhere_fk)" in error
    finally:
        _run(mariadb_admin, f"DROP USER '{user}'@'%'")


def test_a_refusing_key_from_another_database_is_kept_out_by_a_where_sql_that_names_it(
    mariadb_url: str, mariadb_second_url: str, tmp_path: Path
) -> None:
    """A where_sql reading ``orders`` reads the store's own: the other database's key is still
    unaccounted for. Reading it by its database's name accounts for it, and the run keeps the
    client it still references."""
    store, other, elsewhere = _mariadb_clients(mariadb_url, mariadb_second_url, "NO ACTION")
    local = 'where_sql = "NOT EXISTS (SELECT 1 FROM orders o WHERE o.client_id = clients.id)"\n'
    refused = _cli(_config(tmp_path, mariadb_url, extra=local), "config", "validate")
    assert refused.exit_code == ExitCode.BAD_CONFIG, refused.output
    (error,) = _errors(refused)
    assert re.match(
        rf"error: rules\[0\]\.table: '{elsewhere}\.orders' references 'clients' \(client_id\) "
        r"with ON DELETE (NO ACTION|RESTRICT) \(constraint orders_elsewhere_fk\): a row it still "
        rf"references cannot be deleted, .* where_sql that reads {elsewhere}\.orders ",
        error,
    ), error
    named = local.replace("FROM orders", f"FROM `{elsewhere}`.orders")
    config = _config(tmp_path, mariadb_url, extra=named)
    assert _cli(config, "config", "validate").exit_code == 0
    ran = _cli(config, "run", "--yes", "--allow-over-limit", "clients")
    assert ran.exit_code == 0, ran.output
    assert remaining_ids(store, "clients") == {2}
    assert remaining_ids(store, "orders") == set()
    assert remaining_ids(other, "orders") == {20}


def _postgres_clients(url: str) -> Engine:
    """clients 1, 2, 3, ended long ago; referencing them: "OrderItems" (CASCADE; item 1 ->
    client 1), public.orders (NO ACTION; order 10 -> client 2), archive.orders (CASCADE; order
    20 -> client 3), "Order Items" (SET NULL; none)."""
    engine = create_engine(url)
    _run(
        engine,
        "CREATE SCHEMA archive",
        "CREATE TABLE clients (id int PRIMARY KEY, ended_at timestamp NOT NULL)",
        'CREATE TABLE "OrderItems" (id int PRIMARY KEY, client_id int NOT NULL '
        "REFERENCES clients (id) ON DELETE CASCADE)",
        "CREATE TABLE public.orders (id int PRIMARY KEY, client_id int NOT NULL "
        "CONSTRAINT public_orders_fk REFERENCES clients (id))",
        "CREATE TABLE archive.orders (id int PRIMARY KEY, client_id int NOT NULL "
        "CONSTRAINT archive_orders_fk REFERENCES clients (id) ON DELETE CASCADE)",
        "INSERT INTO clients VALUES (1, '2020-01-01'), (2, '2020-01-01'), (3, '2020-01-01')",
        'INSERT INTO "OrderItems" VALUES (1, 1)',
        "INSERT INTO public.orders VALUES (10, 2)",
        "INSERT INTO archive.orders VALUES (20, 3)",
    )
    return engine


ITEMS = """
[[rules.children]]
table = "OrderItems"
foreign_key = "client_id"
"""


def test_a_child_is_the_table_its_name_reaches_quoted_or_not_and_no_other(
    postgres_url: str, tmp_path: Path
) -> None:
    """ "OrderItems" listed by its name matches its key (the catalog spells it quoted); the
    child ``orders`` is public.orders, the one the search_path reaches, so archive.orders'
    cascade is still unaccounted for, named with its schema. A table whose name no child can
    take ("Order Items") is refused, saying why."""
    engine = _postgres_clients(postgres_url)
    config = _config(tmp_path, postgres_url, more_children=ITEMS)
    for error in _refused_everywhere(config):
        assert error.startswith(
            "error: rules[0].table: 'archive.orders' references 'clients' (client_id) with ON "
            "DELETE CASCADE (constraint archive_orders_fk): the database would delete its rows "
            "unrecorded; drop the cascade (archive.orders cannot be listed in children: "
        )
    assert remaining_ids(engine, "clients") == {1, 2, 3}
    _run(
        engine,
        "ALTER TABLE archive.orders DROP CONSTRAINT archive_orders_fk",
        'CREATE TABLE "Order Items" (id int PRIMARY KEY, client_id int '
        "CONSTRAINT spaced_fk REFERENCES clients (id) ON DELETE SET NULL)",
    )
    result = _cli(config, "config", "validate")
    assert result.exit_code == ExitCode.BAD_CONFIG, result.output
    (error,) = _errors(result)
    assert error.startswith(
        "error: rules[0].table: '\"Order Items\"' references 'clients' (client_id) with ON "
        "DELETE SET NULL (constraint spaced_fk): the database would rewrite its rows "
        '(client_id) unrecorded; change the key\'s ON DELETE ("Order Items" cannot be listed '
        "in children: its name is not a plain identifier (letters, digits, _), as a child's "
        "must be)"
    )
    _run(engine, 'DROP TABLE "Order Items"')
    assert _cli(config, "config", "validate").exit_code == 0


def test_the_store_urls_search_path_says_which_table_a_child_is(
    postgres_url: str, tmp_path: Path
) -> None:
    """With search_path archive, public in the store's URL, the child ``orders`` is
    archive.orders, for the checks as for the run: public.orders' key is the one unaccounted
    for, and a where_sql reading ``orders`` reads archive's; reading public.orders accounts
    for it. The run then deletes the clients 1 and 3 with their items and archived orders,
    recorded as children, and keeps client 2, still referenced."""
    engine = _postgres_clients(postgres_url)
    url = (
        make_url(postgres_url)
        .update_query_dict({"options": "-csearch_path=archive,public"})
        .render_as_string(hide_password=False)
    )
    kept_out = 'where_sql = "NOT EXISTS (SELECT 1 FROM orders o WHERE o.client_id = clients.id)"\n'
    config = _config(tmp_path, url, extra=kept_out, more_children=ITEMS)
    for error in _refused_everywhere(config):
        assert error.startswith(
            "error: rules[0].table: 'public.orders' references 'clients' (client_id) with ON "
            "DELETE NO ACTION (constraint public_orders_fk): a row it still references "
        )
        assert "where_sql that reads public.orders " in error
    config = _config(
        tmp_path,
        url,
        extra=kept_out.replace("FROM orders", "FROM public.orders"),
        more_children=ITEMS,
    )
    assert _cli(config, "config", "validate").exit_code == 0
    ran = _cli(config, "run", "--yes", "--allow-over-limit", "clients", "--output", "json")
    assert ran.exit_code == 0, ran.output
    (outcome,) = json.loads(ran.stdout)["rules"]
    assert outcome["children"] == {"OrderItems": 1, "orders": 1}
    assert remaining_ids(engine, "clients") == {2}
    assert remaining_ids(engine, '"OrderItems"') == set()
    assert remaining_ids(engine, "archive.orders") == set()
    assert remaining_ids(engine, "public.orders") == {10}
    assert _cli(config, "audit", "verify").exit_code == 0


def test_a_read_only_engine_keeps_the_urls_options_and_stays_read_only(postgres_url: str) -> None:
    """validate, plan and dry runs open the store read-only: the URL's options (its
    search_path) still apply there, as in a run, and cannot turn read-only off."""
    options = "-csearch_path=archive,public -cdefault_transaction_read_only=off"
    url = (
        make_url(postgres_url)
        .update_query_dict({"options": options})
        .render_as_string(hide_password=False)
    )
    for read_only in (True, False):
        engine = create_sql_engine(url, read_only=read_only)
        try:
            with engine.connect() as connection:
                assert connection.execute(text("SHOW search_path")).scalar() == "archive,public"
                writable = connection.execute(text("SHOW default_transaction_read_only"))
                assert writable.scalar() == ("on" if read_only else "off")
        finally:
            engine.dispose()
    engine = create_sql_engine(url, read_only=True)
    try:
        with pytest.raises(DBAPIError, match="read-only"), engine.begin() as connection:
            connection.execute(text("CREATE TABLE written (id int)"))
    finally:
        engine.dispose()
