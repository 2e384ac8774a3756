"""The legal identity of the parties of an invoice, and the VAT rules that
follow from it.

- SIREN: the 9 digits of a French company's registration, with a Luhn
  check digit (INSEE).
- VAT numbers: the country prefix (Greece's is `EL`, VIES's spelling) and
  the shape VIES gives each member state; a French number `FR` + key + SIREN
  has its key checked against its SIREN (key = (12 + 3 x (SIREN mod 97))
  mod 97; the rarer keys with letters, given to some foreign companies, are
  checked for shape only). Outside the EU a number is taken as written (two
  letters, then 2 to 18 letters or digits).
- Reverse charge (article 196 of Directive 2006/112/EC, article 283-2 of
  the CGI): a business customer identified for VAT in another member state
  than the seller's accounts for the VAT of the services it buys; the seller
  charges none and says so. A customer the merchant marked `tax_exempt` is
  treated the same way, as before.

Pure: strings in, strings or booleans out; ValueError with a message the
API puts in its 400.
"""
from __future__ import annotations

import re

# Member states of the European Union, by the prefix of their VAT numbers.
EU_VAT_PREFIXES = {
    "AT": "AT", "BE": "BE", "BG": "BG", "CY": "CY", "CZ": "CZ", "DE": "DE", "DK": "DK", "EE": "EE",
    "EL": "GR", "ES": "ES", "FI": "FI", "FR": "FR", "HR": "HR", "HU": "HU", "IE": "IE", "IT": "IT",
    "LT": "LT", "LU": "LU", "LV": "LV", "MT": "MT", "NL": "NL", "PL": "PL", "PT": "PT", "RO": "RO",
    "SE": "SE", "SI": "SI", "SK": "SK",
}
EU_COUNTRIES = frozenset(EU_VAT_PREFIXES.values())

# What follows the prefix, per member state (the shapes VIES checks).
_EU_VAT_SHAPES = {
    "AT": r"U\d{8}", "BE": r"[01]\d{9}", "BG": r"\d{9,10}", "CY": r"\d{8}[A-Z]", "CZ": r"\d{8,10}",
    "DE": r"\d{9}", "DK": r"\d{8}", "EE": r"\d{9}", "EL": r"\d{9}", "ES": r"[A-Z0-9]\d{7}[A-Z0-9]",
    "FI": r"\d{8}", "FR": r"[0-9A-HJ-NP-Z]{2}\d{9}", "HR": r"\d{11}", "HU": r"\d{8}",
    "IE": r"\d{7}[A-W][A-IW]?|\d[A-Z0-9+*]\d{5}[A-W]", "IT": r"\d{11}", "LT": r"\d{9}|\d{12}", "LU": r"\d{8}",
    "LV": r"\d{11}", "MT": r"\d{8}", "NL": r"\d{9}B\d{2}", "PL": r"\d{10}", "PT": r"\d{9}", "RO": r"[1-9]\d{1,9}",
    "SE": r"\d{10}01", "SI": r"\d{8}", "SK": r"\d{10}",
    # Northern Ireland's numbers for trade in goods with the EU (a UK number).
    "XI": r"\d{9}|\d{12}|GD\d{3}|HA\d{3}",
}
_EU_VAT = {prefix: re.compile(f"(?:{shape})") for prefix, shape in _EU_VAT_SHAPES.items()}
_OTHER_VAT = re.compile(r"[A-Z]{2}[A-Z0-9]{2,18}")
_SEPARATORS = re.compile(r"[\s.\-]")


def luhn_valid(digits: str) -> bool:
    """The Luhn check of a string of digits (SIREN, SIRET)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def normalize_siren(value: str) -> str:
    """A SIREN as 9 digits ("123 456 789" -> "123456789"), or ValueError."""
    siren = _SEPARATORS.sub("", value or "")
    if not re.fullmatch(r"\d{9}", siren):
        raise ValueError("a SIREN is 9 digits (e.g. 732829320)")
    if not luhn_valid(siren):
        raise ValueError("not a valid SIREN: its check digit (Luhn) is wrong")
    return siren


def french_vat_key(siren: str) -> str:
    """The two-digit key of the French VAT number of `siren`."""
    return f"{(12 + 3 * (int(siren) % 97)) % 97:02d}"


def french_vat_number(siren: str) -> str:
    return f"FR{french_vat_key(siren)}{siren}"


def normalize_vat_number(value: str) -> str:
    """A VAT number upper case without separators ("fr 40 303 265 045" ->
    "FR40303265045"), checked (module docstring), or ValueError."""
    number = _SEPARATORS.sub("", value or "").upper()
    prefix, rest = number[:2], number[2:]
    if prefix == "GR":
        raise ValueError("Greek VAT numbers start with EL, not GR")
    shape = _EU_VAT.get(prefix)
    if shape is None:
        if not _OTHER_VAT.fullmatch(number):
            raise ValueError("a VAT number starts with its country's two letters (e.g. FR40303265045)")
        return number
    if not shape.fullmatch(rest):
        raise ValueError(f"not the shape of a VAT number of {prefix} (e.g. {_example(prefix)})")
    if prefix == "FR":
        key, siren = rest[:2], rest[2:]
        if not luhn_valid(siren):
            raise ValueError("not a valid French VAT number: its SIREN's check digit (Luhn) is wrong")
        if key.isdigit() and key != french_vat_key(siren):
            raise ValueError(f"not a valid French VAT number: its key should be {french_vat_key(siren)} "
                             f"for SIREN {siren}")
    return number


def siren_of_vat_number(vat_number: str | None) -> str | None:
    """The SIREN inside a French VAT number."""
    if vat_number and vat_number.startswith("FR") and len(vat_number) == 13:
        return vat_number[4:]
    return None


def check_siren_matches_vat(siren: str | None, vat_number: str | None) -> None:
    """A French VAT number holds the company's SIREN: both given, they agree."""
    inside = siren_of_vat_number(vat_number)
    if siren and inside and inside != siren:
        raise ValueError(f"the French VAT number {vat_number} is not SIREN {siren}'s "
                         f"({french_vat_number(siren)})")


def vat_country(vat_number: str | None) -> str | None:
    """The ISO country of a VAT number's prefix (EL -> GR)."""
    if not vat_number:
        return None
    prefix = vat_number[:2]
    return EU_VAT_PREFIXES.get(prefix, prefix)


def is_eu(country: str | None) -> bool:
    return country in EU_COUNTRIES


def seller_country(address: dict | None, vat_number: str | None) -> str | None:
    """Where the seller is established: its address, else its VAT number's country."""
    return (address or {}).get("country") or vat_country(vat_number)


def reverse_charge_applies(*, seller_country: str | None, buyer_country: str | None,
                           buyer_vat_number: str | None, tax_exempt: bool) -> bool:
    """Whether the buyer accounts for the VAT (module docstring): a
    `tax_exempt` customer, or a business identified for VAT in another
    member state than the seller's (Northern Ireland's `XI` numbers are for
    goods only: services to it are services to the UK)."""
    if tax_exempt:
        return True
    if not buyer_vat_number or not is_eu(seller_country):
        return False
    # Where the customer is identified for VAT and where it is established
    # (its country) must both be another member state.
    identified_in = vat_country(buyer_vat_number)
    established_in = buyer_country or identified_in
    return (is_eu(identified_in) and is_eu(established_in)
            and seller_country not in (identified_in, established_in))


def _example(prefix: str) -> str:
    return {"FR": "FR40303265045", "DE": "DE123456789", "BE": "BE0123456789", "NL": "NL123456789B01",
            "IT": "IT12345678901", "ES": "ESA12345678", "AT": "ATU12345678", "EL": "EL123456789"}.get(
        prefix, f"{prefix} followed by its digits")
