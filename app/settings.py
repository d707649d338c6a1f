"""Checks of the settings, so that a bad value stops start-up with a message naming it."""

import logging
import numbers
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.database import SYNCHRONOUS_MODES


class ConfigError(RuntimeError):
    """A setting has a value Taskboard cannot use; the message names it and the fix."""


def _name(setting: str) -> str:
    return f"{setting} (environment variable TASKBOARD_{setting})"


def _number(config, setting: str, *, minimum: float, above: bool = False,
            whole: bool = False) -> None:
    value = config.get(setting)
    kind = "a whole number" if whole else "a number"
    valid = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if valid and whole:
        valid = float(value).is_integer()
    if valid:
        valid = value > minimum if above else value >= minimum
    if not valid:
        bound = f"greater than {minimum:g}" if above else f"of at least {minimum:g}"
        raise ConfigError(f"{_name(setting)} must be {kind} {bound}; got {value!r}")


def check_settings(config) -> None:
    """Raise ConfigError for the first setting whose value Taskboard cannot use."""
    _number(config, "WORKER_CONCURRENCY", minimum=1, whole=True)
    _number(config, "WORKER_POLL_INTERVAL", minimum=0, above=True)
    _number(config, "LEASE_SECONDS", minimum=0, above=True)
    _number(config, "HEARTBEAT_INTERVAL", minimum=0, above=True)
    _number(config, "SHUTDOWN_GRACE_SECONDS", minimum=0)
    _number(config, "DEFAULT_MAX_ATTEMPTS", minimum=1, whole=True)
    _number(config, "DEFAULT_TIMEOUT_SECONDS", minimum=0, above=True)
    _number(config, "RETRY_BACKOFF_BASE", minimum=0)
    _number(config, "RETRY_BACKOFF_MAX", minimum=0)
    _number(config, "MAX_RESULT_BYTES", minimum=1, whole=True)
    _number(config, "PAGE_SIZE", minimum=1, whole=True)
    _number(config, "MAX_CONTENT_LENGTH", minimum=1, whole=True)
    _number(config, "REFRESH_INTERVAL", minimum=0, above=True)
    _number(config, "SQLITE_BUSY_TIMEOUT", minimum=0)

    if config["HEARTBEAT_INTERVAL"] >= config["LEASE_SECONDS"]:
        raise ConfigError(
            f"{_name('HEARTBEAT_INTERVAL')} ({config['HEARTBEAT_INTERVAL']:g} s) must be shorter "
            f"than LEASE_SECONDS ({config['LEASE_SECONDS']:g} s), or leases expire between beats"
        )
    if config["DEFAULT_MAX_ATTEMPTS"] > 100:
        raise ConfigError(f"{_name('DEFAULT_MAX_ATTEMPTS')} must be at most 100")
    if not isinstance(config.get("EMBEDDED_WORKER"), bool):
        raise ConfigError(f"{_name('EMBEDDED_WORKER')} must be true or false; "
                          f"got {config.get('EMBEDDED_WORKER')!r}")
    if str(config.get("SQLITE_SYNCHRONOUS")).upper() not in SYNCHRONOUS_MODES:
        raise ConfigError(f"{_name('SQLITE_SYNCHRONOUS')} must be one of "
                          f"{', '.join(SYNCHRONOUS_MODES)}; got {config.get('SQLITE_SYNCHRONOUS')!r}")
    _check_time_zone(config, "TIMEZONE")
    _check_retention_days(config)
    level = str(config.get("LOG_LEVEL")).upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ConfigError(f"{_name('LOG_LEVEL')} must be DEBUG, INFO, WARNING, ERROR or "
                          f"CRITICAL; got {config.get('LOG_LEVEL')!r}")


def _check_time_zone(config, setting: str) -> None:
    value = config.get(setting)
    message = (f"{_name(setting)} must be an IANA time zone name such as UTC or "
               f"Europe/Berlin; got {value!r}")
    if not isinstance(value, str):
        raise ConfigError(message)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(message) from None


def _check_retention_days(config) -> None:
    value = config.get("RETENTION_DAYS")
    if value in (None, ""):
        return
    whole = isinstance(value, int) and not isinstance(value, bool)
    if not whole or not 0 <= value <= 36_500:
        raise ConfigError(f"{_name('RETENTION_DAYS')} must be a whole number of days from 1 to "
                          f"36500, or 0 to turn retention off; got {value!r}")
