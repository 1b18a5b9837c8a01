"""311 service requests with the requester's personal data (which must never be published).

Requesters come from a pool in which a few people file many requests (Pareto weights), so
district x type x week cells have several distinct requesters. The free-text description
sometimes leaks the requester's phone number or e-mail address, as real 311 data does.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sample_data.city import City
from sample_data.people import NamePools, make_people
from sample_data.util import (
    US_PER_H,
    US_PER_S,
    day_starts_us,
    format_ids,
    local_offset_hours,
    local_seconds_to_utc,
    rng_for,
    ts_array,
    weekdays,
)
from transforms.schemas import SERVICE_REQUEST_TYPES, SERVICE_REQUESTS, UTC_TS

REQUESTS_PER_SCALE = 3_000  # per 14 days at scale 1
REQUESTERS_PER_REQUEST = 0.7
P_HOME_DISTRICT = 0.85
P_ANONYMOUS = 0.03
P_LEAK_PHONE = 0.02
P_LEAK_EMAIL = 0.015
# Per type: share of requests, agency, median resolution time (hours).
TYPE_SHARE = {
    "pothole": 0.20, "streetlight_out": 0.10, "missed_collection": 0.16,
    "illegal_dumping": 0.12, "graffiti": 0.08, "noise": 0.14, "water_leak": 0.05,
    "tree_maintenance": 0.06, "abandoned_vehicle": 0.05, "rodent": 0.04,
}
AGENCY = {
    "pothole": "Transport", "streetlight_out": "Transport", "missed_collection": "Sanitation",
    "illegal_dumping": "Sanitation", "graffiti": "Public Works", "noise": "Police",
    "water_leak": "Water", "tree_maintenance": "Parks", "abandoned_vehicle": "Police",
    "rodent": "Health",
}
MEDIAN_HOURS = {
    "pothole": 40, "streetlight_out": 30, "missed_collection": 16, "illegal_dumping": 36,
    "graffiti": 60, "noise": 2, "water_leak": 8, "tree_maintenance": 96,
    "abandoned_vehicle": 72, "rodent": 60,
}
PHRASES = {
    "pothole": ("Large pothole in the road.", "Deep hole near the crossing, dangerous for bikes."),
    "streetlight_out": ("Street light not working.", "Lamp post flickering all night."),
    "missed_collection": ("Bins were not emptied this week.", "Waste collection missed again."),
    "illegal_dumping": ("Mattress and furniture dumped on the pavement.",
                        "Bags of rubbish left next to the containers."),
    "graffiti": ("Graffiti on the wall of the school.", "New tags on the bus shelter."),
    "noise": ("Loud music late at night.", "Construction noise before 7 am."),
    "water_leak": ("Water running from a hydrant.", "Leak in the street, water on the road."),
    "tree_maintenance": ("Branch hanging over the footpath.", "Dead tree should be checked."),
    "abandoned_vehicle": ("Car without plates parked for weeks.",
                          "Abandoned scooter blocking the path."),
    "rodent": ("Rats seen near the playground.", "Mice in the courtyard bins."),
}
HOURLY = np.array([0.3, 0.2, 0.1, 0.1, 0.1, 0.2, 0.6, 1.5, 3.0, 4.0, 4.2, 4.0,
                   3.6, 3.8, 3.8, 3.6, 3.4, 3.0, 2.6, 2.2, 1.8, 1.4, 1.0, 0.6])
HOURLY_NOISE = np.array([4.0, 3.5, 2.5, 1.5, 0.8, 0.5, 0.6, 0.8, 0.8, 0.8, 0.8, 0.8,
                         0.8, 0.8, 0.8, 0.8, 0.9, 1.0, 1.2, 1.6, 2.2, 3.0, 4.0, 4.5])
DAY_FACTOR = np.array([1.15, 1.1, 1.05, 1.05, 1.0, 0.7, 0.55])


def make_service_requests(seed: int, city: City, pools: NamePools, scale: float, start: date,
                          days: int) -> pa.Table:
    """Generate the 311 requests of the window as a ``service_requests`` table.

    About ``3,000 * scale * days / 14`` requests; ~10 % still open or in progress at the end of
    the window (closed_at null); closed_at is always after created_at.
    """
    rng = rng_for(seed, "requests")
    types = np.array(SERVICE_REQUEST_TYPES)
    share = np.array([TYPE_SHARE[t] for t in types])
    n = int(rng.poisson(REQUESTS_PER_SCALE * scale * days / 14))
    if n == 0:
        return SERVICE_REQUESTS.arrow_schema().empty_table()
    people = make_people(rng, pools, city, max(1, round(REQUESTERS_PER_REQUEST * n)))
    w = rng.pareto(1.3, people.age.shape[0]) + 1.0
    who = rng.choice(people.age.shape[0], size=n, p=w / w.sum())
    pop_p = city.population / city.population.sum()
    district = np.where(rng.random(n) < P_HOME_DISTRICT, people.district[who],
                        rng.choice(city.n_districts, size=n, p=pop_p))
    # Type mix varies by district around the city-wide shares.
    mix = rng.dirichlet(share * 60, size=city.n_districts)
    cdf = np.cumsum(mix, axis=1)[district]
    rtype = np.minimum((cdf < rng.random(n)[:, None]).sum(axis=1), len(types) - 1)
    wd = weekdays(start, days)
    day = rng.choice(days, size=n, p=DAY_FACTOR[wd] / DAY_FACTOR[wd].sum())
    is_noise = types[rtype] == "noise"
    cdf_h, cdf_noise = np.cumsum(HOURLY), np.cumsum(HOURLY_NOISE)
    hour = np.where(is_noise,
                    np.searchsorted(cdf_noise, rng.random(n) * cdf_noise[-1], "right"),
                    np.searchsorted(cdf_h, rng.random(n) * cdf_h[-1], "right"))
    starts = day_starts_us(start, days)
    created = local_seconds_to_utc(day, hour * 3600 + rng.integers(0, 3600, n), starts,
                                   local_offset_hours(start, days))
    order = np.argsort(created, kind="stable")
    created, district, rtype, who = created[order], district[order], rtype[order], who[order]
    # Resolution: lognormal hours by type; ~10 % open or in progress, ~3 % cancelled.
    median_h = np.array([MEDIAN_HOURS[t] for t in types])[rtype]
    hours = median_h * rng.lognormal(0.0, 0.8, n)
    u = rng.random(n)
    status = np.select([u < 0.03, u < 0.05, u < 0.08], ["open", "in_progress", "cancelled"],
                       "closed")
    hours = np.where(status == "cancelled", hours * 0.3, hours)
    closed = created + np.maximum(np.round(hours * 3600), 60).astype(np.int64) * US_PER_S
    unresolved = (status == "open") | (status == "in_progress")
    # An extract taken at the end of the window cannot know later closures.
    late = ~unresolved & (closed >= starts[-1])
    status = np.where(late, np.where(starts[-1] - created < 24 * US_PER_H, "open",
                                     "in_progress"), status)
    unresolved |= late
    lat, lon = city.random_points(rng, district)
    # Description: a generic phrase, sometimes leaking the requester's phone or e-mail.
    phrase_pool = pa.array([p for t in types for p in PHRASES[t]])
    phrase = phrase_pool.take(pa.array(rtype * 2 + rng.integers(0, 2, n)))
    who_a = pa.array(who)
    phone, email = people.phone.take(who_a), people.email.take(who_a)
    leak = rng.random(n)
    description = pc.if_else(
        pa.array(leak < P_LEAK_PHONE),
        pc.binary_join_element_wise(phrase, " Please call me back at ", phone, "."),
        pc.if_else(pa.array((leak >= P_LEAK_PHONE) & (leak < P_LEAK_PHONE + P_LEAK_EMAIL)),
                   pc.binary_join_element_wise(phrase, " Reply to ", email, "."), phrase))
    anonymous = pa.array(rng.random(n) < P_ANONYMOUS)

    def personal(values: pa.Array) -> pa.Array:
        return pc.if_else(anonymous, pa.nulls(n, values.type), values)

    return pa.table({
        "request_id": format_ids(np.arange(1, n + 1), 7, "SR"),
        "created_at": ts_array(created),
        "closed_at": pc.if_else(pa.array(unresolved), pa.nulls(n, UTC_TS),
                                ts_array(closed)),
        "request_type": pa.array(types[rtype]),
        "agency": pa.array(np.array([AGENCY[t] for t in types])[rtype]),
        "status": pa.array(status),
        "district_id": city.district_ids.take(pa.array(district)),
        "lat": lat,
        "lon": lon,
        "description": description,
        "requester_name": personal(people.name.take(who_a)),
        "requester_phone": personal(phone),
        "requester_email": personal(email),
        "requester_address": personal(people.address.take(who_a)),
        "requester_age": personal(pa.array(people.age[who], pa.int64())),
        "requester_gender": personal(people.gender.take(who_a)),
    })


#: Public names of the request types (the category reference table, city/request_types.csv).
REQUEST_TYPE_NAMES: dict[str, str] = {
    "pothole": "Pothole",
    "streetlight_out": "Streetlight out",
    "missed_collection": "Missed waste collection",
    "illegal_dumping": "Illegal dumping",
    "graffiti": "Graffiti",
    "noise": "Noise complaint",
    "water_leak": "Water leak",
    "tree_maintenance": "Tree maintenance",
    "abandoned_vehicle": "Abandoned vehicle",
    "rodent": "Rodents",
}


def make_request_types() -> pa.Table:
    """The category reference table: ``request_type`` code and its public ``name``."""
    return pa.table({"request_type": pa.array(SERVICE_REQUEST_TYPES, pa.string()),
                     "name": pa.array([REQUEST_TYPE_NAMES.get(t, t.replace("_", " ").capitalize())
                                       for t in SERVICE_REQUEST_TYPES], pa.string())})
