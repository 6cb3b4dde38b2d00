"""Unit conversion with pint's unit registry (lengths, weights, volumes, temperatures, speeds, ...)."""

from __future__ import annotations

import re
from functools import lru_cache

import pint

ALIASES = {
    "celsius": "degC",
    "centigrade": "degC",
    "fahrenheit": "degF",
    "kelvin": "kelvin",
    "mph": "mile/hour",
    "kph": "km/hour",
    "km/h": "km/hour",
    "kmh": "km/hour",
    "miles per hour": "mile/hour",
    "kilometers per hour": "km/hour",
    "kilometres per hour": "km/hour",
    "fl oz": "fluid_ounce",
    "fluid ounces": "fluid_ounce",
    "stone": "stone",
    "kilo": "kilogram",
    "kilos": "kilogram",
    "lbs": "pound",
    "klicks": "kilometer",
}


class ConversionError(ValueError):
    pass


@lru_cache(maxsize=1)
def registry() -> pint.UnitRegistry:
    return pint.UnitRegistry(autoconvert_offset_to_baseunit=True)


def unit(name: str) -> str:
    key = re.sub(r"\s+", " ", name.strip().lower()).removeprefix("degrees ").removeprefix("degree ")
    return ALIASES.get(key, ALIASES.get(key.rstrip("s"), key.replace(" ", "_")))


def convert(value: float, from_unit: str, to_unit: str) -> float:
    ureg = registry()
    try:
        return ureg.Quantity(value, unit(from_unit)).to(unit(to_unit)).magnitude
    except pint.UndefinedUnitError:
        raise ConversionError(f"I don't know how to convert {from_unit} to {to_unit}") from None
    except pint.DimensionalityError:
        raise ConversionError(f"{from_unit} can't be converted to {to_unit}") from None
    except (AttributeError, ValueError, TypeError, AssertionError):
        raise ConversionError(f"I can't convert {from_unit} to {to_unit}") from None
