"""``python -m envs``: list the registered ``CTM/...`` environment ids with a description each."""

from __future__ import annotations

from envs import list_envs


def format_env_table(rows: list[tuple[str, str]]) -> str:
    """Two aligned columns: id, then description."""
    width = max(len(env_id) for env_id, _ in rows)
    return "\n".join(f"{env_id:<{width}}  {description}" for env_id, description in rows)


def main() -> None:
    """Print the table to stdout."""
    print(format_env_table(list_envs()))


if __name__ == "__main__":
    main()
