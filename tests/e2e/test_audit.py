"""The audit trail on the local stage: its driver hands the billing table's
stream to the audit feed as Lambda would, so a change made over HTTP shows
in GET /audit, with the key that made it, within a moment."""
from tests.e2e.test_reports import eventually


def test_a_customer_change_shows_in_its_audit_trail(new_merchant, stage):
    merchant = new_merchant()
    customer = merchant.post("/customers", json={"name": "Labo Martin", "email": "compta@labo-martin.fr",
                                                 "country": "FR"}).json()
    changed = merchant.patch(f"/customers/{customer['id']}", json={"name": "Labo Martin & fils"})
    assert changed.status_code == 200, changed.text

    entries = eventually(lambda: merchant.get("/audit", params={"entity_id": customer["id"]}).json()["data"],
                         lambda data: len(data) == 2)
    if len(entries) != 2:
        driver = (stage.state_dir / "driver.log").read_text(errors="replace")
        raise AssertionError(f"the audit trail shows {entries}\n--- driver.log\n{driver[-6000:]}")
    updated, created = entries
    actor = f"key:{merchant.key[:11]}"
    assert (created["action"], created["actor"], created["after"]["name"]) == ("created", actor, "Labo Martin")
    assert (updated["action"], updated["actor"]) == ("updated", actor)
    assert (updated["before"], updated["after"]) == ({"name": "Labo Martin"}, {"name": "Labo Martin & fils"})
    # Another merchant sees nothing of it.
    other = new_merchant(name="Autre")
    assert other.get("/audit", params={"entity_id": customer["id"]}).json()["data"] == []
