"""The credit packages of the help page, with their Polar products from configuration."""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from app.config import Settings


@dataclass(frozen=True)
class CreditPackage:
    id: str
    name: str
    credits: int
    price_cents: int
    first_purchase_only: bool = False
    currency: str = "usd"

    @property
    def price_per_credit(self) -> str:
        """US dollars per credit, to four decimal places, as on the help page."""
        dollars = Decimal(self.price_cents) / 100 / self.credits
        return str(dollars.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


FIRST_TIME = CreditPackage("first_time", "First-time offer", 30_000, 4_900, True)
REFILL = CreditPackage("refill", "Regular refill", 30_000, 10_000)
SMALL = CreditPackage("small", "Smaller tier", 1_000, 1_000)
PACKAGES: tuple[CreditPackage, ...] = (FIRST_TIME, REFILL, SMALL)
PACKAGES_BY_ID = {package.id: package for package in PACKAGES}


def polar_product_id(settings: Settings, package: CreditPackage) -> str | None:
    return {
        FIRST_TIME.id: settings.polar_product_first_time,
        REFILL.id: settings.polar_product_refill,
        SMALL.id: settings.polar_product_small,
    }[package.id]


def recommend(total_credits: int, *, first_time_available: bool) -> CreditPackage:
    """The help page's advice: the first-time offer if it is still open, else the smallest
    package that covers the plan."""
    if first_time_available:
        return FIRST_TIME
    return SMALL if total_credits <= SMALL.credits else REFILL
