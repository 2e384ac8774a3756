"""The console's resellers and licensors: the payees, and one payee's book
(a reseller's customers) with its statement of a month, the same services
as `GET /payees`, `GET /customers` with the reseller's key and
`GET /payees/{id}/statements`."""
from __future__ import annotations

from chalice import Blueprint

from chalicelib.web.pages import Visit, page
from chalicelib.web.render import render

blueprint = Blueprint(__name__)
BOOK_PAGE = 50


@page(blueprint, "/console/payees")
def payees_page(visit: Visit):
    from chalicelib.services import payees

    found, next_cursor = payees.list_payees(visit.merchant_id, limit=100, cursor=None)
    return render(visit, "payees.html", payees=found, more=next_cursor is not None)


@page(blueprint, "/console/payees/{payee_id}")
def payee_page(visit: Visit, payee_id: str):
    from chalicelib.services import customers, payees, statements

    payee = payees.get_payee(visit.merchant_id, payee_id)
    statement = statements.get_statement(visit.merchant_id, payee_id, visit.query("month") or None)
    book, more = [], False
    if payee["kind"] == "reseller":
        book, next_cursor = customers.list_customers(visit.merchant_id, limit=BOOK_PAGE, reseller_id=payee_id)
        more = next_cursor is not None
    return render(visit, "payee.html", payee=payee, statement=statement, book=book, more=more)
