"""Synthetic people and addresses: small Faker-made pools combined with vectorized numpy.

Faker (seeded) only fills fixed-size pools (first names, last names, street names); people and
households are drawn from the pools with numpy, so the cost does not grow with ``scale``.
Phone numbers are E.164 (+49...), e-mail addresses use the reserved example domains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from faker import Faker

from sample_data.city import CITY_NAME, City
from sample_data.util import format_ids, unique_codes

STREETS_PER_DISTRICT = 30
N_FIRST = 300
N_LAST = 800
EMAIL_DOMAINS = ("example.com", "example.net", "example.org", "mail.example", "post.example")
GENDERS = ("female", "male", "other")
_TRANSLIT = (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss"), ("é", "e"), ("è", "e"),
             ("á", "a"), ("ç", "c"), (" ", ""), ("'", ""))


@dataclass(frozen=True)
class NamePools:
    """Faker-made pools: female/male first names, last names and street names per district."""

    first_female: pa.Array
    first_male: pa.Array
    last: pa.Array
    streets: pa.Array  # STREETS_PER_DISTRICT consecutive entries per district
    postcode_base: np.ndarray  # first postcode of each district


def make_pools(seed: int, n_districts: int) -> NamePools:
    """Fill the name and street pools from a Faker ``de_DE`` instance seeded with ``seed``."""
    fake = Faker("de_DE")
    fake.seed_instance(seed)
    first_female = pa.array([fake.first_name_female() for _ in range(N_FIRST)])
    first_male = pa.array([fake.first_name_male() for _ in range(N_FIRST)])
    last = pa.array([fake.last_name() for _ in range(N_LAST)])
    streets = pa.array([fake.unique.street_name()
                        for _ in range(STREETS_PER_DISTRICT * n_districts)])
    postcode_base = 10100 + 100 * np.arange(n_districts)
    return NamePools(first_female, first_male, last, streets, postcode_base)


def addresses(rng: np.random.Generator, pools: NamePools, district: np.ndarray) -> pa.Array:
    """Street addresses ``"<street> <no>, <postcode> Neuhaven"`` inside the given districts."""
    n = district.shape[0]
    street_idx = district * STREETS_PER_DISTRICT + rng.integers(0, STREETS_PER_DISTRICT, n)
    street = pools.streets.take(pa.array(street_idx))
    number = pc.cast(pa.array(rng.zipf(1.6, n).clip(1, 180)), pa.string())
    postcode = format_ids(pools.postcode_base[district] + rng.integers(0, 40, n), 5)
    return pc.binary_join_element_wise(street, " ", number, ", ", postcode, f" {CITY_NAME}", "")


def phones(rng: np.random.Generator, n: int) -> pa.Array:
    """Distinct E.164 phone numbers: ~70 % mobile (+4915x/+4917x), the rest landline (+4930)."""
    codes = unique_codes(rng, n, 10**9)
    mobile = rng.random(n) < 0.7
    prefix = np.where(rng.random(n) < 0.5, "+4915", "+4917")
    mob = pc.binary_join_element_wise(pa.array(prefix), format_ids(codes, 9), "")
    land = format_ids(codes % 10**8, 8, "+4930")
    return pc.if_else(pa.array(mobile), mob, land)


def _ascii_lower(arr: pa.Array) -> pa.Array:
    out = pc.utf8_lower(arr)
    for old, new in _TRANSLIT:
        out = pc.replace_substring(out, old, new)
    return out


@dataclass(frozen=True)
class People:
    """Persons drawn from the pools (all arrays aligned)."""

    name: pa.Array
    phone: pa.Array
    email: pa.Array
    address: pa.Array
    age: np.ndarray
    gender: pa.Array
    district: np.ndarray


def make_people(rng: np.random.Generator, pools: NamePools, city: City, n: int) -> People:
    """Draw ``n`` residents: home district by population, name by gender, age 18-90.

    E-mail addresses are unique per person (``first.last`` plus a number when taken).
    """
    p = city.population / city.population.sum()
    district = rng.choice(city.n_districts, size=n, p=p)
    g = rng.choice(3, size=n, p=[0.49, 0.49, 0.02])
    gender = pa.array(np.array(GENDERS)[g])
    use_female = (g == 0) | ((g == 2) & (rng.random(n) < 0.5))
    fi = pa.array(rng.integers(0, N_FIRST, n))
    first = pc.if_else(pa.array(use_female), pools.first_female.take(fi),
                       pools.first_male.take(fi))
    last = pools.last.take(pa.array(rng.integers(0, N_LAST, n)))
    name = pc.binary_join_element_wise(first, last, " ")
    local = pc.binary_join_element_wise(_ascii_lower(first), _ascii_lower(last), ".")
    # Make the local part unique: the k-th holder of the same local part gets a suffix k.
    keys = np.asarray(local.to_numpy(zero_copy_only=False), dtype=object)
    _, inverse = np.unique(keys.astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    group_start = np.r_[0, np.flatnonzero(np.diff(inverse[order])) + 1]
    rank_sorted = np.arange(n) - np.repeat(group_start, np.diff(np.r_[group_start, n]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = rank_sorted
    suffix = pc.if_else(pa.array(rank > 0), pc.cast(pa.array(rank), pa.string()), "")
    domain = pa.array(np.array(EMAIL_DOMAINS)[rng.integers(0, len(EMAIL_DOMAINS), n)])
    email = pc.binary_join_element_wise(local, suffix, "@", domain, "")
    age = np.clip(np.round(rng.normal(47, 17, n)), 18, 90).astype(np.int64)
    return People(name, phones(rng, n), email, addresses(rng, pools, district), age, gender,
                  district)
