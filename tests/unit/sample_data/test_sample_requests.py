"""311 service requests: statuses, resolution times, locations, requester data and leakage."""

from __future__ import annotations

import pandas as pd
import pytest

from transforms.schemas import SERVICE_REQUEST_TYPES


@pytest.fixture(scope="module")
def sr(city) -> pd.DataFrame:
    return city.read("service_requests/requests.csv").to_pandas()


def test_closed_after_created_and_about_ten_percent_unresolved(sr):
    closed = sr[sr.closed_at.notna()]
    assert (closed.closed_at > closed.created_at).all()
    unresolved = sr.status.isin(["open", "in_progress"])
    assert sr.closed_at[unresolved].isna().all()
    assert sr.closed_at[~unresolved].notna().all()
    assert 0.05 < unresolved.mean() < 0.2
    assert (sr.closed_at.dropna() < pd.Timestamp("2026-10-19", tz="UTC")).all()


def test_type_mix_is_skewed_and_resolution_depends_on_type(sr):
    assert set(sr.request_type) == set(SERVICE_REQUEST_TYPES)
    share = sr.request_type.value_counts(normalize=True)
    assert share.max() > 3 * share.min()
    hours = (sr.closed_at - sr.created_at).dt.total_seconds() / 3600
    median = hours[sr.status == "closed"].groupby(sr.request_type).median()
    assert median["noise"] * 10 < median["tree_maintenance"]
    assert sr.agency.notna().all()
    assert sr.groupby("request_type").agency.nunique().max() == 1


def test_points_inside_their_district(sr, city):
    d = city.read("city/districts.csv").to_pandas().set_index("district_id").loc[sr.district_id]
    assert ((sr.lat.values > d.lat_min.values) & (sr.lat.values < d.lat_max.values)
            & (sr.lon.values > d.lon_min.values) & (sr.lon.values < d.lon_max.values)).all()


def test_requester_personal_data(sr):
    known = sr[sr.requester_email.notna()]
    assert 0.9 < len(known) / len(sr) < 1.0  # a few anonymous requests
    assert known.requester_phone.str.fullmatch(r"\+49\d{9,12}").all()
    assert known.requester_email.str.fullmatch(r"[a-z0-9.\-]+@[a-z.]+\.[a-z]+").all()
    assert known.requester_address.str.contains(r"\d, \d{5} ").all()
    assert known.requester_age.between(18, 90).all()
    assert set(known.requester_gender) == {"female", "male", "other"}
    assert known.requester_name.str.contains(" ").all()
    # One person, one e-mail: the e-mail identifies the requester.
    per_email = known.groupby("requester_email")[["requester_name", "requester_phone"]].nunique()
    assert (per_email <= 1).all().all()


def test_many_cells_have_15_distinct_requesters_and_some_people_file_several(sr):
    known = sr[sr.requester_email.notna()].copy()
    known["week"] = known.created_at.dt.isocalendar().week
    distinct = known.groupby(["district_id", "request_type", "week"]).requester_email.nunique()
    assert (distinct >= 15).sum() >= 20
    per_person = known.requester_email.value_counts()
    assert (per_person >= 3).sum() >= 20


def test_description_sometimes_leaks_the_requesters_contact(sr):
    known = sr[sr.requester_email.notna()]
    phone_leak = [p in d for p, d in zip(known.requester_phone, known.description)]
    email_leak = [e in d for e, d in zip(known.requester_email, known.description)]
    assert 0.005 < sum(phone_leak) / len(known) < 0.05
    assert 0.005 < sum(email_leak) / len(known) < 0.05
    assert sr.description.notna().all()


def test_noise_complaints_come_at_night(sr):
    hour = sr.created_at.dt.tz_convert("Europe/Berlin").dt.hour
    night = hour.isin([22, 23, 0, 1, 2])
    assert night[sr.request_type == "noise"].mean() > 3 * night[sr.request_type != "noise"].mean()
