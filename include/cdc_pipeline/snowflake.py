"""SnowflakeHook that can also reach the local Snowflake emulator (fakesnow over plain http).

The provider's hook (6.20.0) forwards ``host`` and ``port`` from the connection extras to
``snowflake.connector.connect`` but not ``protocol``, so it always speaks https and cannot reach
the local server. It also drops the connector's timeouts, and without them a server-side error
makes the connector retry a request without end. This subclass forwards exactly those extras
when they are present; a connection without them (production) yields identical parameters.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook

# Connector keyword arguments taken from the connection extras when set.
# protocol: "http" for the local emulator; timeouts in seconds (the connector wants ints).
FORWARDED_EXTRAS: dict[str, type] = {
    "protocol": str,
    "network_timeout": int,
    "login_timeout": int,
    "socket_timeout": int,
}


class CdcSnowflakeHook(SnowflakeHook):
    """The provider's SnowflakeHook plus ``protocol`` and connector timeouts from the extras."""

    def _add_network_config(self, conn_config: dict[str, Any], extra_dict: dict[str, Any]) -> None:
        """Extend the provider's host/port/proxy handling; the rest of the config is untouched."""
        super()._add_network_config(conn_config, extra_dict)
        for name, cast in FORWARDED_EXTRAS.items():
            value = extra_dict.get(name)
            if value is None or value == "":
                continue
            conn_config[name] = cast(value)
