"""The time and date in a named place or time zone."""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones


class UnknownPlace(ValueError):
    pass


@lru_cache(maxsize=1)
def _zones_by_place() -> dict[str, str]:
    """'tokyo' -> 'Asia/Tokyo', 'new york' -> 'America/New_York', 'utc' -> 'UTC', ..."""
    zones: dict[str, str] = {}
    for name in sorted(available_timezones()):
        if name.startswith(("Etc/", "SystemV/", "posix/", "right/")):
            continue
        place = name.rsplit("/", 1)[-1].replace("_", " ").lower()
        zones.setdefault(place, name)
        zones.setdefault(name.lower(), name)
    zones.update({"utc": "UTC", "gmt": "UTC", "london": "Europe/London", "san francisco": "America/Los_Angeles"})
    return zones


def find_zone(location: str) -> ZoneInfo:
    key = re.sub(r"\s+", " ", location.strip().lower())
    if not key:
        raise UnknownPlace("no place given")
    try:
        return ZoneInfo(location.strip())
    except (ZoneInfoNotFoundError, ValueError):
        pass
    zones = _zones_by_place()
    # "Tokyo, Japan" -> "tokyo"; "new york city" -> "new york"
    candidates = [key, key.split(",")[0].strip(), re.sub(r"\b(city|time|timezone)\b", "", key).strip()]
    for cand in candidates:
        if cand in zones:
            return ZoneInfo(zones[cand])
    raise UnknownPlace(f"Sorry, I don't know the time zone of {location.strip()}.")


def local_time(location: str, now: datetime | None = None) -> str:
    zone = find_zone(location)
    moment = (now or datetime.now(tz=ZoneInfo("UTC"))).astimezone(zone)
    place = zone.key.rsplit("/", 1)[-1].replace("_", " ")
    return f"It is {moment:%H:%M} on {moment:%A, %B} {moment.day} in {place}."
