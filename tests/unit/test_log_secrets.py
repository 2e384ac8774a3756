"""The scan of the local stage's logs (tests/e2e/log_secrets.py) finds what
must never be logged, and not the numbers a log line legitimately holds."""
from tests.e2e.log_secrets import TEST_CARDS, luhn, secrets_in

KEY = "sk_" + "Ab3-_" * 8 + "xyz"  # 43 characters after "sk_", as services/merchants.py makes them


def test_luhn():
    assert luhn("4242424242424242") and luhn("378282246310005")
    assert not luhn("4242424242424241")


def test_the_test_cards_looked_for_are_card_numbers():
    # A typo in the list would make the scan look for a number no one types.
    assert all(luhn(card) and len(card) in (15, 16) for card in TEST_CARDS)


def test_card_numbers_plain_or_grouped_are_found():
    assert secrets_in("card=4242424242424242") == ["card number: 4242…"]
    assert secrets_in("4000 0000 0000 0341") == ["card number: 4000…"]
    assert secrets_in("amex 3782-822463-10005") == ["card number: 3782…"]


def test_times_ids_and_long_numbers_are_not_cards():
    assert secrets_in("at 1733500000000 seq 360391103591888448 amount 4242.42 id inv_01m976z4ageynbatd6") == []
    assert secrets_in("4242424242424241") == []  # not a card
    # A fuzzer's random path parameter that passes Luhn with a Visa prefix is not a typed card.
    assert luhn("4112000000000007") and secrets_in("GET /console/invoices/4112000000000007") == []


def test_keys_and_stage_secrets_are_found_and_never_echoed_whole():
    found = secrets_in(f"Authorization: Bearer {KEY} webhook whsec_local")
    assert found == ["merchant API key: sk_Ab3…", "stage secret: whse…"]
    assert all(KEY not in line for line in found)
    # A key's prefix (the actor of the history and the audit trail, "key:sk_Ab3-_Ab3") is not the key.
    assert secrets_in("actor key:sk_Ab3-_Ab3") == []


def test_a_webhook_signing_secret_is_found_and_never_echoed_whole():
    from chalicelib.services.webhooks import new_secret

    secret = new_secret()
    found = secrets_in(f'{{"secret": "{secret}"}}')
    assert found == [f"webhook secret: {secret[:6]}…"] and secret not in found[0]
    assert secrets_in("endpoint we_01jdf7k3m4n5p6q7r8s9t0v1w2 whsec_short") == []
