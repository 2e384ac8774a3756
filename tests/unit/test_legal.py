"""The legal identity checks (SIREN, VAT numbers) and the reverse-charge rule."""
from __future__ import annotations

import pytest

from chalicelib.domain import legal


@pytest.mark.parametrize("siren", ["732829320", "303265045", "552100554", "356000000", "732 829 320"])
def test_a_siren_has_a_luhn_check_digit(siren):
    assert legal.normalize_siren(siren) == siren.replace(" ", "")


@pytest.mark.parametrize("siren, message", [("732829321", "Luhn"), ("12345678", "9 digits"), ("7328293200", "9 digits"),
                                            ("73282932A", "9 digits")])
def test_a_wrong_siren_is_refused(siren, message):
    with pytest.raises(ValueError, match=message):
        legal.normalize_siren(siren)


def test_a_french_vat_number_carries_its_sirens_key():
    # The examples of the French administration: key = (12 + 3 x (SIREN mod 97)) mod 97.
    assert legal.french_vat_number("303265045") == "FR40303265045"
    assert legal.french_vat_number("732829320") == "FR44732829320"
    assert legal.normalize_vat_number("fr 40-303.265.045") == "FR40303265045"
    with pytest.raises(ValueError, match="its key should be 40"):
        legal.normalize_vat_number("FR41303265045")
    with pytest.raises(ValueError, match="Luhn"):
        legal.normalize_vat_number("FR40303265046")
    # The newer keys with letters are checked for shape only.
    assert legal.normalize_vat_number("FRXA303265045") == "FRXA303265045"
    with pytest.raises(ValueError, match="shape"):
        legal.normalize_vat_number("FRIO303265045")


@pytest.mark.parametrize("number", ["DE123456789", "ATU12345678", "BE0123456789", "NL123456789B01", "EL123456789",
                                    "ESA1234567B", "IT12345678901", "IE1234567WA", "SE123456789001", "CY12345678L",
                                    "GB123456789", "CHE123456789", "NO123456789MVA"])
def test_vat_numbers_have_their_countrys_shape(number):
    assert legal.normalize_vat_number(number) == number


@pytest.mark.parametrize("number, message", [("DE12345678", "shape of a VAT number of DE"),
                                             ("ATU1234567", "shape"), ("NL123456789C01", "shape"),
                                             ("GR123456789", "start with EL"), ("123456789", "two letters"),
                                             ("SE1234567890", "shape")])
def test_a_vat_number_of_the_wrong_shape_is_refused(number, message):
    with pytest.raises(ValueError, match=message):
        legal.normalize_vat_number(number)


def test_the_siren_and_the_vat_number_must_agree():
    legal.check_siren_matches_vat("303265045", "FR40303265045")
    legal.check_siren_matches_vat("303265045", "DE123456789")
    legal.check_siren_matches_vat(None, "FR40303265045")
    with pytest.raises(ValueError, match="FR44732829320"):
        legal.check_siren_matches_vat("732829320", "FR40303265045")


@pytest.mark.parametrize("seller, buyer, vat, exempt, expected", [
    ("FR", "DE", "DE123456789", False, True),    # a German business: reverse charge
    ("FR", "FR", "FR40303265045", False, False),  # a French one pays French VAT
    ("FR", "FR", "DE123456789", False, False),   # established in France: French VAT, whatever its number
    ("FR", "DE", None, False, False),            # a German consumer: no VAT number, VAT charged
    ("FR", "GR", "EL123456789", False, True),    # Greece's prefix is EL
    ("FR", "GB", "GB123456789", False, False),   # outside the EU: the merchant's rates decide
    ("FR", "GB", "XI123456789", False, False),   # Northern Ireland's XI is for goods only
    (None, "DE", "DE123456789", False, False),   # a seller of unknown country: no automatic reverse charge
    ("FR", "US", None, True, True),              # tax_exempt, as before
])
def test_the_reverse_charge_applies_to_businesses_of_another_member_state(seller, buyer, vat, exempt, expected):
    assert legal.reverse_charge_applies(seller_country=seller, buyer_country=buyer, buyer_vat_number=vat,
                                        tax_exempt=exempt) is expected


def test_the_sellers_country_is_its_address_else_its_vat_numbers():
    assert legal.seller_country({"country": "BE"}, "FR40303265045") == "BE"
    assert legal.seller_country(None, "EL123456789") == "GR"
    assert legal.seller_country(None, None) is None
