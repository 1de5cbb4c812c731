"""Vocabularies of the sample generator: names, domains, stores, products, pages.

Kept apart from the generator so ``connectors/sample.py`` reads as behaviour, not data.
"""

from __future__ import annotations

from bisect import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate
from random import Random
from typing import Generic, TypeVar

_T = TypeVar("_T")

# --------------------------------------------------------------------------------------
# Built-in vocabularies (several cultures, so names are not all Anglo-Saxon).
# --------------------------------------------------------------------------------------

FIRST_NAMES: tuple[str, ...] = (
    "James", "Mary", "Robert", "Patricia", "Michael", "Jennifer", "David", "Sarah",
    "Thomas", "Emily", "Daniel", "Olivia", "Jack", "Charlotte", "Grace", "Liam",
    "José", "María", "Carlos", "Lucía", "Alejandro", "Sofía", "Diego", "Valentina",
    "Lukas", "Anna", "Jonas", "Lena", "Felix", "Hannah", "Louis", "Camille",
    "Hugo", "Chloé", "Léa", "Julien", "Aarav", "Priya", "Rohan", "Ananya",
    "Vikram", "Kavya", "Wei", "Mei", "Jun", "Hao", "Haruto", "Yuki",
    "Aiko", "Min-jun", "Seo-yeon", "Omar", "Fatima", "Youssef", "Layla", "Chinedu",
    "Ngozi", "Kwame", "Amara", "Piotr", "Agnieszka", "Giulia", "Marco", "Francesca",
)  # fmt: skip

LAST_NAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson",
    "Taylor", "Anderson", "Moore", "Clark", "Walker", "Wright", "O'Brien", "Murphy",
    "García", "Rodríguez", "Martínez", "Hernández", "López", "González", "Pérez", "Silva",
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Becker", "Dubois", "Martin",
    "Bernard", "Lefèvre", "Moreau", "Patel", "Sharma", "Singh", "Gupta", "Reddy",
    "Wang", "Li", "Zhang", "Chen", "Liu", "Nguyen", "Tran", "Kim",
    "Park", "Sato", "Suzuki", "Tanaka", "Okafor", "Adeyemi", "Mensah", "Haddad",
    "Khan", "Rossi", "Russo", "Kowalski", "Nowak", "Cohen", "Santos", "Ivanov",
)  # fmt: skip

_PERSONAL_DOMAINS: tuple[tuple[str, int], ...] = (
    ("gmail.com", 40), ("outlook.com", 14), ("yahoo.com", 10), ("hotmail.com", 5),
    ("icloud.com", 8),
)  # fmt: skip
_COUNTRY_DOMAINS: dict[str, tuple[str, ...]] = {
    "US": ("aol.com", "comcast.net"),
    "CA": ("rogers.com", "shaw.ca"),
    "GB": ("btinternet.com", "sky.com"),
    "DE": ("gmx.de", "web.de"),
    "FR": ("orange.fr", "free.fr"),
    "AU": ("bigpond.com", "optusnet.com.au"),
}
_COMPANY_DOMAINS: tuple[str, ...] = (
    "northwind.com", "contoso.com", "fabrikam.com", "initech.com", "globex.com",
    "acme.com", "wayne-enterprises.com", "stark-industries.com", "hooli.com", "vandelay.com",
)  # fmt: skip
_SMALL_BUSINESSES: tuple[str, ...] = (
    "riverside-dental", "bluebottle-bakery", "hartley-law", "summit-physio",
    "oakwood-florist", "kitefly-studio", "greenleaf-cafe", "ironside-gym",
)  # fmt: skip
_SHARED_PREFIXES: tuple[str, ...] = ("info", "contact", "office", "hello")

#: (country, weight, currency)
_COUNTRIES: tuple[tuple[str, int, str], ...] = (
    ("US", 75, "USD"), ("GB", 8, "GBP"), ("CA", 5, "CAD"), ("DE", 4, "EUR"),
    ("FR", 4, "EUR"), ("AU", 4, "AUD"),
)  # fmt: skip
_CURRENCY = {country: currency for country, _, currency in _COUNTRIES}
_FX = {"USD": 1.0, "GBP": 0.79, "CAD": 1.36, "EUR": 0.92, "AUD": 1.52}

_US_AREAS = ("415", "212", "312", "206", "512", "617", "303", "404", "305", "213", "646",
             "718", "773", "650", "510", "702", "615", "503", "619", "202")  # fmt: skip
_CA_AREAS = ("416", "604", "514", "613", "403", "647")


@dataclass(frozen=True, slots=True)
class _Store:
    store_id: str
    city: str
    country: str


_STORES: dict[str, tuple[_Store, ...]] = {
    "US": (
        _Store("store-sfo-01", "San Francisco", "US"),
        _Store("store-nyc-01", "New York", "US"),
        _Store("store-nyc-02", "Brooklyn", "US"),
        _Store("store-chi-01", "Chicago", "US"),
        _Store("store-sea-01", "Seattle", "US"),
        _Store("store-aus-01", "Austin", "US"),
    ),
    "GB": (_Store("store-lon-01", "London", "GB"), _Store("store-man-01", "Manchester", "GB")),
    "CA": (_Store("store-tor-01", "Toronto", "CA"),),
    "DE": (_Store("store-ber-01", "Berlin", "DE"),),
    "FR": (_Store("store-par-01", "Paris", "FR"),),
    "AU": (_Store("store-syd-01", "Sydney", "AU"),),
}


@dataclass(frozen=True, slots=True)
class _Product:
    sku: str
    name: str
    category: str
    price: float  # USD


_PRODUCTS: tuple[_Product, ...] = (
    _Product("SKU-10001", "Merino Crew Sweater", "knitwear", 89.0),
    _Product("SKU-10002", "Organic Cotton Tee", "tops", 24.0),
    _Product("SKU-10003", "Slim Selvedge Jeans", "denim", 119.0),
    _Product("SKU-10004", "Linen Shirt", "tops", 59.0),
    _Product("SKU-10005", "Waxed Field Jacket", "outerwear", 229.0),
    _Product("SKU-10006", "Down Puffer Vest", "outerwear", 149.0),
    _Product("SKU-10007", "Leather Chelsea Boots", "shoes", 189.0),
    _Product("SKU-10008", "Canvas Sneakers", "shoes", 69.0),
    _Product("SKU-10009", "Wool Beanie", "accessories", 29.0),
    _Product("SKU-10010", "Cashmere Scarf", "accessories", 99.0),
    _Product("SKU-10011", "Leather Belt", "accessories", 45.0),
    _Product("SKU-10012", "Running Shorts", "activewear", 35.0),
    _Product("SKU-10013", "Yoga Leggings", "activewear", 65.0),
    _Product("SKU-10014", "Rain Shell", "outerwear", 139.0),
    _Product("SKU-10015", "Chino Trousers", "bottoms", 79.0),
    _Product("SKU-10016", "Silk Blouse", "tops", 110.0),
    _Product("SKU-10017", "Midi Wrap Dress", "dresses", 129.0),
    _Product("SKU-10018", "Canvas Tote", "bags", 39.0),
    _Product("SKU-10019", "Leather Backpack", "bags", 199.0),
    _Product("SKU-10020", "Sport Socks 3-pack", "accessories", 15.0),
    _Product("SKU-10021", "Flannel Pyjamas", "sleepwear", 55.0),
    _Product("SKU-10022", "Sunglasses", "accessories", 120.0),
    _Product("SKU-10023", "Hooded Sweatshirt", "tops", 64.0),
    _Product("SKU-10024", "Gift Card", "gift", 50.0),
)

_PAGES: tuple[tuple[str, str], ...] = (
    ("/", "Home"), ("/new-in", "New In"), ("/sale", "Sale"), ("/women", "Women"),
    ("/men", "Men"), ("/stores", "Find a store"), ("/help/returns", "Returns"),
    ("/loyalty", "Loyalty club"), ("/blog/autumn-lookbook", "Autumn lookbook"),
)  # fmt: skip
_REFERRERS: tuple[str | None, ...] = (
    None, None, "https://www.google.com/", "https://www.instagram.com/",
    "https://www.facebook.com/", "https://newsletter.shop.example/",
)  # fmt: skip
_USER_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/124.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Version/17.4 Safari/605",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
)
_EMAIL_SUBJECTS: tuple[str, ...] = (
    "Where is my order?", "Return request", "Question about sizing", "Re: Your receipt",
    "Loyalty points missing", "Change delivery address", "Thank you!", "Invoice request",
    "Item arrived damaged", "Do you have this in store?",
)  # fmt: skip
_AGENTS: tuple[str, ...] = ("agent-01", "agent-02", "agent-03", "agent-04", "agent-05",
                            "agent-06", "agent-07", "agent-08")  # fmt: skip
_CALL_QUEUES: tuple[str, ...] = ("orders", "returns", "loyalty", "store-info", "billing")
_SMS_BODIES: tuple[str, ...] = ("YES", "STOP", "Is my order ready for pickup?", "HELP",
                                "Thanks!", "C", "Can I change my pickup store?")  # fmt: skip
_PAYMENTS: tuple[str, ...] = ("card", "card", "card", "contactless", "cash", "gift_card")


class _Weighted(Generic[_T]):
    """``rng.choices(values, weights)[0]`` with the cumulative weights computed once.

    Why: ``choices`` rebuilds them on every call, which was the biggest cost of a
    20 000-customer sample. Draws the same value as ``choices`` for the same RNG state.
    """

    __slots__ = ("_cum", "_total", "_values")

    def __init__(self, pairs: Iterable[tuple[_T, int]]) -> None:
        values, weights = zip(*pairs, strict=True)
        self._values: tuple[_T, ...] = values
        self._cum = list(accumulate(weights))
        self._total = float(self._cum[-1])

    def pick(self, rng: Random) -> _T:
        return self._values[bisect(self._cum, rng.random() * self._total, 0, len(self._cum) - 1)]


_DOMAIN_PICK = _Weighted(_PERSONAL_DOMAINS)
_COUNTRY_PICK = _Weighted((country, weight) for country, weight, _ in _COUNTRIES)
_DEVICES_PICK = _Weighted(((1, 60), (2, 30), (3, 10)))
_QUANTITY_PICK = _Weighted(((1, 80), (2, 15), (3, 5)))
_VIEWS_PICK = _Weighted(((0, 20), (1, 40), (2, 25), (3, 15)))
