"""Routing: which factory makes each line. Pure functions, no I/O.

Lines are mapped by SKU (or variant id), a stable id, never by title, through the SKU catalogue: each SKU
has one or more factories by priority. An order whose lines belong to two factories becomes two factory
orders. An order that cannot be routed is held with a reason, never dropped.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from relay.domain.models import AttentionReason, FactoryOrder, OrderLine, factory_order_key
from relay.store.records import SKU_FROM_CONFIG, RouteJob, RoutePlan, SkuRecord


class Catalogue:
    """The SKU catalogue as the router reads it: rows by (storefront, SKU), best priority first."""

    def __init__(self, records: Iterable[SkuRecord], version: int = 0) -> None:
        self.version = version
        self._rows: dict[tuple[str, str], list[SkuRecord]] = defaultdict(list)
        for record in records:
            self._rows[(record.storefront, record.sku)].append(record)
        for rows in self._rows.values():
            rows.sort(key=lambda r: (r.priority, r.factory))

    @classmethod
    def from_map(cls, mapping: Mapping[str, str]) -> Catalogue:
        """A catalogue of one factory per SKU (the config's `routing.skus` form)."""
        return cls(SkuRecord(sku=s, factory=f, source=SKU_FROM_CONFIG) for s, f in mapping.items())

    def rows(self, storefront: str, line: OrderLine) -> list[SkuRecord] | None:
        """The rows for a line (active or not): by its SKU, else its variant id; a storefront's own rows
        replace the rows for every storefront. None when the catalogue does not know the line."""
        for key in (line.sku, line.variant_id):
            if key:
                rows = self._rows.get((storefront, key)) or self._rows.get(("", key))
                if rows:
                    return rows
        return None

    def candidates(self, storefront: str, line: OrderLine) -> list[SkuRecord]:
        """The active rows for a line, the one to try first first."""
        return [r for r in self.rows(storefront, line) or () if r.active]


def _label(line: OrderLine) -> str:
    return line.sku or line.variant_id or line.line_id


def next_factories(
    catalogue: Catalogue, storefront: str, lines: Sequence[OrderLine], *, skip: Collection[str]
) -> dict[str, list[tuple[OrderLine, SkuRecord]]] | None:
    """Each line's best active factory not in `skip`, grouped by factory; None if a line has none."""
    out: dict[str, list[tuple[OrderLine, SkuRecord]]] = defaultdict(list)
    for line in lines:
        pick = next((r for r in catalogue.candidates(storefront, line) if r.factory not in skip), None)
        if pick is None:
            return None
        out[pick.factory].append((line, pick))
    return dict(out)


@dataclass(frozen=True, slots=True)
class StorefrontGuards:
    """One storefront's routing guards (its config keys of the same names)."""

    auto_place: bool = True
    max_order_value: Decimal | None = None
    max_orders_per_hour: int | None = None
    min_margin: Decimal | None = None
    min_margin_percent: Decimal | None = None

    @property
    def checks_margin(self) -> bool:
        return self.min_margin is not None or self.min_margin_percent is not None


@dataclass(frozen=True, slots=True)
class Guards:
    """What the guards need beyond the catalogue: each storefront's guards, each factory's shipping cost per
    order (amount, currency) and exchange rates (`"CNY/EUR"`: one CNY in EUR; the inverse is used too)."""

    storefronts: Mapping[str, StorefrontGuards] = field(default_factory=dict)
    shipping: Mapping[str, tuple[Decimal, str]] = field(default_factory=dict)
    rates: Mapping[str, Decimal] = field(default_factory=dict)


def plan_route(
    job: RouteJob,
    catalogue: Catalogue | Mapping[str, str],
    *,
    test_tags: Collection[str] = (),
    unavailable: Mapping[str, str] | None = None,
    guards: Guards | None = None,
    routed_last_hour: int = 0,
    now: float,
) -> RoutePlan:
    """Decide what happens to one received order.

    Each line goes to its first active factory in the catalogue, skipping `unavailable` ones (name ->
    why: disabled) when a lower-priority factory makes it too; the plan says why in `fallbacks`. A plan
    that would place the order then passes the storefront's guards (`guard`), unless an operator released
    this version (`job.guards_waived`); `routed_last_hour` is how many of its storefront's orders were
    routed in the last hour. The plan carries the version it was made for (`job.content_hash`): the store
    applies it only to that version. `now` is kept for callers; a factory order carries the order's own
    creation time.
    """
    if not isinstance(catalogue, Catalogue):
        catalogue = Catalogue.from_map(catalogue)
    plan = _decide(job, catalogue, test_tags, unavailable or {})
    if plan.factory_orders and guards is not None and not job.guards_waived:
        held = guard(job, plan, catalogue, guards, routed_last_hour=routed_last_hour)
        if held is not None:
            plan = RoutePlan(job.order_id, hold=held[0], detail=held[1])
    return replace(plan, content_hash=job.content_hash)


def guard(
    job: RouteJob, plan: RoutePlan, catalogue: Catalogue, guards: Guards, *, routed_last_hour: int
) -> tuple[AttentionReason, str] | None:
    """Why a routable order must wait for a person, or None: its margin (or a currency that cannot be
    converted), `max_order_value`, `max_orders_per_hour`, then `auto_place`, first one found."""
    rules = guards.storefronts.get(job.storefront, StorefrontGuards())
    order = job.order
    paid = (
        order.total
        if order.total is not None
        else sum((ln.unit_price * ln.quantity for ln in order.lines), Decimal(0))
    )
    if rules.checks_margin:
        found = _margin(job, plan, catalogue, guards, rules=rules, paid=paid)
        if found is not None:
            return found
    if rules.max_order_value is not None and paid > rules.max_order_value:
        return (
            AttentionReason.ORDER_VALUE_CAP,
            f"order total {paid} {order.currency} is over max_order_value {rules.max_order_value}",
        )
    if rules.max_orders_per_hour is not None and routed_last_hour >= rules.max_orders_per_hour:
        return (
            AttentionReason.ORDER_RATE_CAP,
            f"{routed_last_hour} orders of {job.storefront} routed in the last hour: "
            f"max_orders_per_hour is {rules.max_orders_per_hour}",
        )
    if not rules.auto_place:
        return (
            AttentionReason.AWAITING_APPROVAL,
            f"auto_place is off for {job.storefront}: release to place it",
        )
    return None


def _margin(
    job: RouteJob,
    plan: RoutePlan,
    catalogue: Catalogue,
    guards: Guards,
    *,
    rules: StorefrontGuards,
    paid: Decimal,
) -> tuple[AttentionReason, str] | None:
    """The margin check: factory cost of every line plus each factory's shipping, in the order's currency."""
    currency = job.order.currency
    goods = shipping = Decimal(0)
    missing: list[str] = []
    for fo in plan.factory_orders:
        for line in fo.lines:
            row = next(
                (r for r in catalogue.candidates(job.storefront, line) if r.factory == fo.factory), None
            )
            if row is None or row.unit_cost is None or row.currency is None:
                missing.append(_label(line))
                continue
            converted = convert(row.unit_cost * line.quantity, row.currency, currency, guards.rates)
            if converted is None:
                return _no_rate(row.currency, currency)
            goods += converted
        if fo.factory in guards.shipping:
            amount, cur = guards.shipping[fo.factory]
            converted = convert(amount, cur, currency, guards.rates)
            if converted is None:
                return _no_rate(cur, currency)
            shipping += converted
    if missing:
        return (
            AttentionReason.MARGIN_TOO_LOW,
            f"no unit cost in the catalogue for {', '.join(sorted(set(missing)))}: the margin cannot be checked",
        )
    cost = goods + shipping
    margin = paid - cost
    required = max(rules.min_margin or Decimal(0), paid * (rules.min_margin_percent or Decimal(0)) / 100)
    if margin >= required:
        return None
    rule = " and ".join(
        part
        for part in (
            f"min_margin {rules.min_margin}" if rules.min_margin is not None else "",
            f"min_margin_percent {rules.min_margin_percent}%" if rules.min_margin_percent is not None else "",
        )
        if part
    )
    return (
        AttentionReason.MARGIN_TOO_LOW,
        f"paid {_money(paid)} {currency}, cost {_money(cost)} {currency} (factory {_money(goods)} + shipping "
        f"{_money(shipping)}), margin {_money(margin)} {currency} < required {_money(required)} {currency} "
        f"({rule})",
    )


def _no_rate(source: str, target: str) -> tuple[AttentionReason, str]:
    return (
        AttentionReason.CURRENCY_MISMATCH,
        f"a cost is in {source} and the order in {target}: no rate {source}/{target} in routing.rates",
    )


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def convert(amount: Decimal, source: str, target: str, rates: Mapping[str, Decimal]) -> Decimal | None:
    """`amount` in `source` as `target` by a configured rate (`"SRC/TGT"`, or the inverse of `"TGT/SRC"`);
    None when there is none: never guessed."""
    if source == target:
        return amount
    if f"{source}/{target}" in rates:
        return amount * rates[f"{source}/{target}"]
    if f"{target}/{source}" in rates:
        return amount / rates[f"{target}/{source}"]
    return None


def _decide(  # noqa: PLR0911 - a decision table reads best as early returns
    job: RouteJob, catalogue: Catalogue, test_tags: Collection[str], unavailable: Mapping[str, str]
) -> RoutePlan:
    order = job.order
    if order.cancelled:
        return RoutePlan(job.order_id, cancel=True)
    if order.fulfilled:
        return RoutePlan(
            job.order_id,
            hold=AttentionReason.ALREADY_FULFILLED,
            detail="fulfilled on the storefront before relay routed it",
        )
    tagged = sorted(set(order.tags) & set(test_tags))
    if order.test or tagged:
        detail = f"tagged {', '.join(tagged)}" if tagged else "storefront marks it as a test order"
        return RoutePlan(job.order_id, hold=AttentionReason.TEST_ORDER, detail=detail)
    if not order.paid:
        return RoutePlan(job.order_id, hold=AttentionReason.UNPAID, detail="waiting for payment")
    store = job.storefront
    missing = [ln.line_id for ln in order.lines if not ln.sku and catalogue.rows(store, ln) is None]
    if missing:
        return RoutePlan(
            job.order_id, hold=AttentionReason.MISSING_SKU, detail=f"lines without SKU: {', '.join(missing)}"
        )
    unknown = sorted({_label(ln) for ln in order.lines if catalogue.rows(store, ln) is None})
    inactive = sorted(
        {
            _label(ln)
            for ln in order.lines
            if catalogue.rows(store, ln) and not catalogue.candidates(store, ln)
        }
    )
    if unknown or inactive:
        parts = [f"unmapped SKUs: {', '.join(unknown)}"] if unknown else []
        parts += [f"not active in the catalogue: {', '.join(inactive)}"] if inactive else []
        return RoutePlan(job.order_id, hold=AttentionReason.UNKNOWN_SKU, detail="; ".join(parts))
    by_factory: dict[str, list[tuple[OrderLine, SkuRecord]]] = defaultdict(list)
    fallbacks: list[str] = []
    for line in order.lines:
        candidates = catalogue.candidates(store, line)
        pick = next((r for r in candidates if r.factory not in unavailable), candidates[0])
        if pick is not candidates[0]:
            first = candidates[0].factory
            fallbacks.append(f"{_label(line)}: {first} {unavailable[first]} -> {pick.factory}")
        by_factory[pick.factory].append((line, pick))
    return RoutePlan(
        job.order_id,
        factory_orders=tuple(
            FactoryOrder(
                key=factory_order_key(job.storefront, order.external_id, factory),
                factory=factory,
                storefront=job.storefront,
                order_id=order.external_id,
                order_number=order.number,
                created_at=order.created_at,
                currency=order.currency,
                email=order.email,
                shipping_address=order.shipping_address,
                lines=tuple(line for line, _ in picked),
                factory_skus={line.line_id: r.factory_sku for line, r in picked if r.factory_sku},
            )
            for factory, picked in sorted(by_factory.items())
        ),
        fallbacks=tuple(fallbacks),
    )


# --- the catalogue as CSV (`relay skus import` / `export`) ------------------------------------------------

CSV_COLUMNS = ("storefront", "sku", "factory", "factory_sku", "unit_cost", "currency", "priority", "active")
_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n"}
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class CatalogueFileError(ValueError):
    """A catalogue CSV that cannot be imported: every problem as (line number, message)."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"line {n}: {msg}" for n, msg in problems))


def parse_catalogue_csv(
    text: str, *, factories: Collection[str] | None = None, storefronts: Collection[str] | None = None
) -> list[SkuRecord]:
    """Read a catalogue CSV (header `storefront,sku,factory,factory_sku,unit_cost,currency,priority,active`;
    only `sku` and `factory` are required). Every row is checked; raises `CatalogueFileError` listing every
    problem by line number (the header is line 1). `factories`, `storefronts`: the configured names, when
    known (a row's `storefront` may be empty: every storefront)."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    problems: list[tuple[int, str]] = []
    unknown_columns = [c for c in header if c not in CSV_COLUMNS]
    if unknown_columns or not {"sku", "factory"} <= set(header):
        problems.append(
            (1, f"header must name columns from {', '.join(CSV_COLUMNS)} (sku and factory required)")
        )
        raise CatalogueFileError(problems)
    records: list[SkuRecord] = []
    seen: dict[tuple[str, str, str], int] = {}
    for row in reader:
        line = reader.line_num
        try:
            record = _record(row, factories, storefronts)
        except ValueError as exc:
            problems.append((line, str(exc)))
            continue
        if record.key in seen:
            problems.append((line, f"repeats line {seen[record.key]} (same storefront, sku and factory)"))
            continue
        seen[record.key] = line
        records.append(record)
    if problems:
        raise CatalogueFileError(problems)
    return records


def _record(  # noqa: PLR0912 - one check per column
    row: Mapping[str, str | None], factories: Collection[str] | None, storefronts: Collection[str] | None
) -> SkuRecord:
    def cell(name: str) -> str:
        return (row.get(name) or "").strip()

    if None in row:
        raise ValueError("more cells than columns")
    sku, factory = cell("sku"), cell("factory")
    if not sku:
        raise ValueError("sku is empty")
    if not factory:
        raise ValueError("factory is empty")
    if factories is not None and factory not in factories:
        raise ValueError(f"unknown factory {factory!r} (configured: {', '.join(sorted(factories))})")
    if storefronts is not None and cell("storefront") and cell("storefront") not in storefronts:
        raise ValueError(
            f"unknown storefront {cell('storefront')!r} (configured: {', '.join(sorted(storefronts))}; "
            "empty: every storefront)"
        )
    cost: Decimal | None = None
    if cell("unit_cost"):
        try:
            cost = Decimal(cell("unit_cost"))
        except InvalidOperation:
            raise ValueError(f"unit_cost {cell('unit_cost')!r} is not a number") from None
        if not cost.is_finite() or cost < 0:
            raise ValueError(f"unit_cost {cell('unit_cost')!r} must be a number >= 0")
    currency = cell("currency") or None
    if currency is not None and not _CURRENCY.match(currency):
        raise ValueError(f"currency {currency!r} is not a 3-letter code like EUR")
    if cost is not None and currency is None:
        raise ValueError("unit_cost needs a currency")
    priority = 0
    if cell("priority"):
        try:
            priority = int(cell("priority"))
        except ValueError:
            raise ValueError(f"priority {cell('priority')!r} is not a whole number") from None
    active = True
    if cell("active"):
        flag = cell("active").lower()
        if flag not in _TRUE | _FALSE:
            raise ValueError(f"active {cell('active')!r} must be true or false")
        active = flag in _TRUE
    return SkuRecord(
        sku=sku,
        factory=factory,
        storefront=cell("storefront"),
        factory_sku=cell("factory_sku") or None,
        unit_cost=cost,
        currency=currency,
        priority=priority,
        active=active,
    )


def catalogue_csv(records: Iterable[SkuRecord]) -> str:
    """The catalogue as CSV, in the form `parse_catalogue_csv` reads (an export imports with no diff)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        writer.writerow(
            [
                r.storefront,
                r.sku,
                r.factory,
                r.factory_sku or "",
                "" if r.unit_cost is None else str(r.unit_cost),
                r.currency or "",
                r.priority,
                "true" if r.active else "false",
            ]
        )
    return out.getvalue()
