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
    zones.update({place: zone for zone, places in ALIASES.items() for place in places})
    return zones


# Big places whose time zone is named after another city, and countries with one time zone (or one most meant).
ALIASES = {
    "Asia/Kolkata": ["india", "mumbai", "bombay", "delhi", "new delhi", "bangalore", "bengaluru", "chennai",
                     "hyderabad", "calcutta"],
    "Asia/Shanghai": ["china", "beijing", "shenzhen", "guangzhou"],
    "Asia/Tokyo": ["japan", "osaka", "kyoto"],
    "Asia/Seoul": ["korea", "south korea"],
    "Asia/Ho_Chi_Minh": ["vietnam", "saigon", "hanoi"],
    "Asia/Dubai": ["uae", "abu dhabi"],
    "Asia/Jerusalem": ["israel", "tel aviv"],
    "Europe/London": ["uk", "england", "britain", "great britain", "scotland", "wales", "edinburgh", "manchester"],
    "Europe/Paris": ["france"],
    "Europe/Berlin": ["germany", "munich", "frankfurt", "hamburg"],
    "Europe/Madrid": ["spain", "barcelona"],
    "Europe/Rome": ["italy", "milan", "florence", "venice"],
    "Europe/Amsterdam": ["netherlands", "holland"],
    "Europe/Moscow": ["russia", "saint petersburg", "st petersburg"],
    "Europe/Istanbul": ["turkey", "ankara"],
    "America/New_York": ["washington", "washington dc", "boston", "miami", "philadelphia", "atlanta", "nyc",
                         "new york city", "east coast"],
    "America/Chicago": ["dallas", "houston", "austin", "texas", "new orleans", "minneapolis"],
    "America/Denver": ["colorado", "salt lake city"],
    "America/Los_Angeles": ["california", "seattle", "las vegas", "san diego", "west coast", "portland"],
    "America/Sao_Paulo": ["brazil", "rio", "rio de janeiro"],
    "America/Argentina/Buenos_Aires": ["argentina"],
    "America/Mexico_City": ["mexico"],
    "America/Toronto": ["ottawa", "ontario"],
    "Australia/Sydney": ["australia", "canberra"],
    "Pacific/Auckland": ["new zealand", "wellington"],
    "Africa/Johannesburg": ["south africa", "cape town"],
    "Africa/Cairo": ["egypt"],
    "Africa/Lagos": ["nigeria"],
    "Africa/Nairobi": ["kenya"],
}  # fmt: skip


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
