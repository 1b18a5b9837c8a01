"""The ONE metadata mapping: a :class:`~publish.base.DatasetRelease` -> a CKAN package dict.

Both publish targets use it: CKAN sends the dict to ``package_create``/``package_patch``; the
local catalog writes it as ``package.json``. It is pure (no I/O, no clock): the same release,
catalog information and previous package give the same dict, byte for byte once serialised
with sorted keys.

What comes out is what ckanext-dcat's ``euro_dcat_ap_3`` profile reads (its extras-based
keys, the "legacy" fields of ckanext-dcat 2.x), so ``/dataset/<id>.ttl`` carries DCAT-AP:

========================  ==============================================================
package key / extra       DCAT-AP property (value)
========================  ==============================================================
``license_id``            CKAN licence id (``cc-by``); the licence IRI goes on every
                          distribution (resource ``license``) as the EU licence authority IRI
``frequency``             ``dct:accrualPeriodicity``: EU frequency authority IRI (DAILY...)
``theme``                 ``dcat:theme``: EU data-theme authority IRIs (JSON list)
``temporal_start/end``    ``dct:temporal`` (``dcat:startDate``/``endDate``, end inclusive)
``spatial_text``/``_uri`` ``dct:spatial`` (label; IRI when configured)
``publisher_*``           ``dct:publisher`` (``foaf:Agent``: name, IRI, e-mail, homepage)
``contact_*``             ``dcat:contactPoint`` (``vcard:Organization``: name, e-mail, IRI)
``access_rights``         ``dct:accessRights``: EU access-right authority IRI (PUBLIC)
``provenance``            ``dct:provenance`` (a sentence)
``language``              ``dct:language``: EU language authority IRI
``privacy_mechanism``,    the data dictionary's statement for the release's privacy method
``privacy_unit_statement``, (``publish/dictionary.yaml``): mechanism, privacy unit,
``post_processing``,      post-processing (rounding, zero floor, clipping, withholding) and
``post_processing_effect_on_sums``  its effect on sums; also a paragraph of ``notes``
resource ``format``       ``dct:format``: EU file-type authority IRI (PARQUET, CSV...)
resource ``mimetype``     ``dcat:mediaType`` (IANA IRI)
resource ``hash``         ``spdx:checksum`` / ``spdx:checksumValue`` (hex, xsd:hexBinary)
resource ``hash_algorithm`` ``spdx:algorithm`` (``spdx:checksumAlgorithm_sha256``)
========================  ==============================================================

Why not ckanext-scheming (``euro_dcat_ap_scheming``): scheming turns off free-form extras, so
the privacy parameters (whose keys differ per privacy method) would need a fixed schema
field per parameter. The extras-based profile serialises the same DCAT-AP properties.

Privacy parameters are written three ways, all readable on the dataset page: flattened under
their own keys (``privacy_method``, ``k_anonymity_k``, ``epsilon``...: the latest partition),
one sentence per partition (extra ``privacy dt=YYYY-MM-DD``, kept across partitions), and on
each resource (``privacy``, the sentence of its partition).

Stable interface (other modules depend on it):

* :func:`package_dict` ``(release, catalog, previous=None) -> dict``
* :func:`resource_dict` ``(release, resource, sha256, size=None, url=None) -> dict``
* :class:`CatalogInfo` (``CatalogInfo.from_settings(settings)``)
* :func:`resource_key` / :func:`resource_key_of` (the stable identity of a resource)
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

from opencity.errors import ConfigError
from publish.base import DatasetRelease, Resource

EU = "http://publications.europa.eu/resource/authority"
SHA256_ALGORITHM = "http://spdx.org/rdf/terms#checksumAlgorithm_sha256"

#: Release licence (SPDX-style, as pipelines write it) -> (CKAN licence id, EU licence IRI).
#: CKAN ids are those of CKAN's default licence list (``license_list``).
LICENSES: dict[str, tuple[str, str]] = {
    "cc-by-4.0": ("cc-by", f"{EU}/licence/CC_BY_4_0"),
    "cc-by": ("cc-by", f"{EU}/licence/CC_BY_4_0"),
    "cc-by-sa-4.0": ("cc-by-sa", f"{EU}/licence/CC_BY_SA_4_0"),
    "cc-by-sa": ("cc-by-sa", f"{EU}/licence/CC_BY_SA_4_0"),
    "cc0-1.0": ("cc-zero", f"{EU}/licence/CC0"),
    "cc-zero": ("cc-zero", f"{EU}/licence/CC0"),
    "odc-by": ("odc-by", f"{EU}/licence/ODC_BY"),
    "odc-odbl": ("odc-odbl", f"{EU}/licence/ODC_BL"),
    "odbl-1.0": ("odc-odbl", f"{EU}/licence/ODC_BL"),
    "odc-pddl": ("odc-pddl", f"{EU}/licence/ODC_PDDL"),
}

#: ISO 8601 repeating durations -> EU frequency authority codes.
FREQUENCIES: dict[str, str] = {
    "R/PT1H": "HOURLY", "R/P1D": "DAILY", "R/P1W": "WEEKLY", "R/P2W": "BIWEEKLY",
    "R/P1M": "MONTHLY", "R/P3M": "QUARTERLY", "R/P6M": "ANNUAL_2", "R/P1Y": "ANNUAL",
}

#: Resource format -> (EU file-type code, IANA media type).
FORMATS: dict[str, tuple[str, str]] = {
    "parquet": ("PARQUET", "application/vnd.apache.parquet"),
    "csv": ("CSV", "text/csv"),
    "json": ("JSON", "application/json"),
    "html": ("HTML", "text/html"),
    "geojson": ("GEOJSON", "application/geo+json"),
    "datastore": ("CSV", "text/csv"),  # the DataStore table is downloadable as CSV
}

#: Tag -> EU data-theme codes (GOVE government, TRAN transport, ENER energy, SOCI society,
#: ENVI environment, REGI regions and cities). A release gets every theme one of its tags maps
#: to, REGI always (city data).
THEMES: dict[str, str] = {
    "311": "GOVE", "service-requests": "GOVE", "kpi": "GOVE",
    "mobility": "TRAN", "transit": "TRAN", "cdr": "TRAN",
    "energy": "ENER", "meter": "ENER", "smart-meter": "ENER", "electricity": "ENER",
    "population": "SOCI", "microdata": "SOCI",
    "environment": "ENVI", "air-quality": "ENVI",
}

#: Data-dictionary statement key -> CKAN extra.
STATEMENT_EXTRAS = {
    "mechanism": "privacy_mechanism",
    "privacy_unit": "privacy_unit_statement",
    "post_processing": "post_processing",
    "effect_on_sums": "post_processing_effect_on_sums",
}

_PRIVACY_LABELS = {
    "privacy_method": "method",
    "suppression_threshold": "cells with fewer than this many people are suppressed",
    "k_anonymity_k": "k (every published combination of quasi-identifiers has at least k "
                     "records)",
    "suppression_limit": "at most this share of records removed",
    "epsilon": "epsilon",
    "delta": "delta",
    "privacy_unit": "privacy unit",
}


@dataclass(frozen=True)
class CatalogInfo:
    """Who publishes and whom to contact: the same for every dataset of one portal.

    Attributes:
        publisher_name: the publishing body (``dct:publisher`` ``foaf:name``).
        publisher_uri: its IRI (e.g. its page or an authority IRI); empty gives a blank node.
        publisher_url: its homepage.
        contact_name: the contact point's name (``vcard:fn``).
        contact_email: the contact point's e-mail (``vcard:hasEmail``, as ``mailto:``).
        contact_uri: the contact point's IRI (optional).
        spatial_uri: IRI of the city (e.g. a GeoNames or EU place IRI), optional.
        language: ISO 639-3 code of the metadata language (EU language authority).
    """

    publisher_name: str = "OpenCity open data team"
    publisher_uri: str = "https://opencity.example.org/"
    publisher_url: str = "https://opencity.example.org/"
    contact_name: str = "OpenCity open data team"
    contact_email: str = "opendata@opencity.example.org"
    contact_uri: str = ""
    spatial_uri: str = ""
    language: str = "ENG"

    def __post_init__(self) -> None:
        if self.contact_email and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
                                               self.contact_email):
            raise ConfigError(f"contact_email {self.contact_email!r} is not an e-mail address")
        for name in ("publisher_uri", "publisher_url", "contact_uri", "spatial_uri"):
            value = getattr(self, name)
            if value and not re.match(r"^https?://\S+$", value):
                raise ConfigError(f"{name} {value!r} must be an http(s) IRI or empty")
        if not re.match(r"^[A-Z]{3}$", self.language):
            raise ConfigError(f"language {self.language!r} must be an ISO 639-3 code in "
                              "capitals, e.g. ENG or DEU")

    @classmethod
    def from_settings(cls, settings: Any) -> CatalogInfo:
        """From an :class:`opencity.settings.Settings` (``publisher_*``, ``contact_*``,
        ``spatial_uri``, ``metadata_language``); missing attributes keep the defaults."""
        values = {}
        for name in ("publisher_name", "publisher_uri", "publisher_url", "contact_name",
                     "contact_email", "contact_uri", "spatial_uri"):
            value = getattr(settings, name, None)
            if value not in (None, ""):
                values[name] = value
        if getattr(settings, "metadata_language", None):
            values["language"] = settings.metadata_language
        return cls(**values)


# ---------------------------------------------------------------------------- vocabularies
def license_ids(license_id: str) -> tuple[str, str]:
    """(CKAN licence id, EU licence authority IRI) of a release licence such as ``CC-BY-4.0``.

    Raises:
        ConfigError: for a licence not in :data:`LICENSES`.
    """
    key = license_id.strip().lower()
    for ckan_id, iri in LICENSES.values():  # already mapped (a package read back)
        if key == iri.lower():
            return ckan_id, iri
    try:
        return LICENSES[key]
    except KeyError:
        raise ConfigError(f"licence {license_id!r} has no CKAN licence id / EU licence IRI; "
                          f"use one of {sorted(LICENSES)}") from None


def frequency_iri(periodicity: str) -> str:
    """EU frequency authority IRI of an ISO 8601 repeating duration (``R/P1D`` -> DAILY)."""
    code = FREQUENCIES.get(periodicity.strip().upper())
    if code is None and periodicity.startswith(f"{EU}/frequency/"):
        code = periodicity.rsplit("/", 1)[-1].upper()  # already an IRI (read back)
        code = code if code in FREQUENCIES.values() else None
    if code is None:
        raise ConfigError(f"accrual periodicity {periodicity!r} has no EU frequency; use one of "
                          f"{sorted(FREQUENCIES)}")
    return f"{EU}/frequency/{code}"


def format_iris(fmt: str) -> tuple[str, str]:
    """(EU file-type IRI, IANA media-type IRI) of a resource format (``parquet``...)."""
    key = fmt.strip().lower()
    if key.startswith(f"{EU}/file-type/".lower()):  # already an IRI (a package read back)
        key = next((k for k, (code, _) in FORMATS.items()
                    if code.lower() == key.rsplit("/", 1)[-1]), key)
    try:
        code, media = FORMATS[key]
    except KeyError:
        raise ConfigError(f"resource format {fmt!r} has no EU file type; use one of "
                          f"{sorted(FORMATS)}") from None
    return f"{EU}/file-type/{code}", f"https://www.iana.org/assignments/media-types/{media}"


def theme_iris(tags: tuple[str, ...]) -> list[str]:
    """EU data-theme IRIs of a release's tags (REGI always; sorted, no duplicates)."""
    codes = {"REGI"} | {THEMES[t.lower()] for t in tags if t.lower() in THEMES}
    return [f"{EU}/data-theme/{c}" for c in sorted(codes)]


# ---------------------------------------------------------------------------- privacy
def flatten_privacy(privacy: dict[str, Any]) -> dict[str, str]:
    """Privacy parameters as string extras; nested dicts become ``outer_inner`` keys."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}_{k}" if prefix else str(k), v)
        else:
            out[prefix] = extra_value(value)

    walk("", privacy)
    return out


def privacy_sentence(privacy: dict[str, Any]) -> str:
    """The privacy parameters as one sentence a person can read, e.g.
    ``method: k_anonymity; k (...): 5; at most this share of records removed: 0.02``."""
    if not privacy:
        return "no privacy protection recorded"
    parts = []
    for key, value in sorted(flatten_privacy(privacy).items(),
                             key=lambda kv: (kv[0] != "privacy_method", kv[0])):
        parts.append(f"{_PRIVACY_LABELS.get(key, key.replace('_', ' '))}: {value}")
    return "; ".join(parts)


def extra_value(value: Any) -> str:
    """A value as CKAN extra text (numbers by repr, lists/dicts as sorted JSON)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, sort_keys=True, default=str)


# ---------------------------------------------------------------------------- identity
def resource_key(dataset: str, resource: Resource) -> str:
    """The stable identity of a resource on a portal: ``<dataset>/<partition or _>/<name>``.

    Stored on the resource (field ``opencity_key``) so a rerun finds it whatever CKAN did
    to its name, and so duplicates (same key twice) can be recognised and removed.
    """
    return f"{dataset}/{resource.partition or '_'}/{resource.name}"


def resource_key_of(dataset: str, name: str, partition: str | None = None) -> str:
    """:func:`resource_key` from its parts (for resources that are not files, e.g. the
    datapackage descriptor or the DataStore table)."""
    return f"{dataset}/{partition or '_'}/{name}"


def portal_resource_name(resource: Resource) -> str:
    """The title of a resource on the portal: ``<name> <partition>``."""
    return f"{resource.name} {resource.partition}" if resource.partition else resource.name


# ---------------------------------------------------------------------------- mapping
def resource_dict(release: DatasetRelease, resource: Resource, sha256: str,
                  size: int | None = None, url: str | None = None) -> dict[str, Any]:
    """The CKAN resource fields of one file of ``release`` (without ``id``/``package_id``).

    Args:
        sha256: hex SHA-256 of the file's bytes (no ``sha256:`` prefix).
        size: bytes, when known.
        url: where it can be downloaded (the local catalog's relative path; CKAN sets its own).
    """
    if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
        raise ConfigError(f"resource {resource.name!r}: hash must be 64 lowercase hex digits "
                          f"of a SHA-256, got {sha256!r}")
    _, licence_iri = license_ids(release.license_id)
    fmt_iri, media_iri = format_iris(resource.format)
    out: dict[str, Any] = {
        "name": portal_resource_name(resource),
        "description": resource.description,
        "format": fmt_iri,
        "mimetype": media_iri,
        "hash": sha256,
        "hash_algorithm": SHA256_ALGORITHM,
        "license": licence_iri,
        "opencity_key": resource_key(release.name, resource),
        "opencity_resource": resource.name,
        "partition": resource.partition or "",
        "privacy": privacy_sentence(release.privacy),
    }
    if release.temporal_coverage:
        out["temporal_start"] = release.temporal_coverage[0]
        out["temporal_end"] = _inclusive_end(release.temporal_coverage[1])
    if size is not None:
        out["size"] = int(size)
    if url is not None:
        out["url"] = url
    return out


def package_dict(release: DatasetRelease, catalog: CatalogInfo | None = None,
                 previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The CKAN package fields of ``release`` (no ``resources``, ``owner_org``, ``private``).

    Args:
        release: the dataset to describe.
        catalog: publisher and contact point (default :class:`CatalogInfo`).
        previous: the package as the portal (or the local catalog) has it now, or None; its
            temporal coverage is widened, not replaced, and the per-partition privacy
            sentences and extras this mapping does not own (e.g. ``opencity_release_state``)
            are kept. Its ``resources`` (as :func:`resource_dict` wrote them) count too:
            their ``temporal_start``/``temporal_end`` and ``partition``/``privacy`` are the
            record the dataset-level fields are derived from, so a package whose extras
            were overwritten by a concurrent writer is derived right again.

    Returns:
        ``name``, ``title``, ``notes``, ``license_id``, ``tags`` and ``extras`` (a list of
        ``{"key", "value"}`` sorted by key, values strings).
    """
    catalog = catalog or CatalogInfo()
    old = {e["key"]: e["value"] for e in (previous or {}).get("extras", [])}
    for res in (previous or {}).get("resources", []):
        if res.get("partition") and res.get("privacy"):
            old[f"privacy {res['partition']}"] = str(res["privacy"])
        for key, pick in (("temporal_start", min), ("temporal_end", max)):
            if res.get(key):
                old[key] = pick(old.get(key) or str(res[key]), str(res[key]))
    licence_id, _ = license_ids(release.license_id)
    ours: dict[str, str] = {}
    # privacy: the latest parameters under their own keys, a sentence per partition.
    ours.update(flatten_privacy(release.privacy))
    ours["privacy"] = privacy_sentence(release.privacy)
    ours["privacy_parameters"] = json.dumps(release.privacy, sort_keys=True, default=str)
    for res in release.resources:
        if res.partition:
            ours[f"privacy {res.partition}"] = privacy_sentence(release.privacy)
    if release.temporal_coverage:
        start, end = release.temporal_coverage
        end_incl = _inclusive_end(end)
        if old.get("temporal_start"):
            start = min(start, old["temporal_start"])
        if old.get("temporal_end"):
            end_incl = max(end_incl, old["temporal_end"])
        ours["temporal_start"], ours["temporal_end"] = start, end_incl
    if release.spatial_coverage:
        ours["spatial_text"] = release.spatial_coverage
    if catalog.spatial_uri:
        ours["spatial_uri"] = catalog.spatial_uri
    ours["frequency"] = frequency_iri(release.accrual_periodicity)
    ours["theme"] = json.dumps(theme_iris(release.tags))
    ours["access_rights"] = f"{EU}/access-right/PUBLIC"
    ours["language"] = json.dumps([f"{EU}/language/{catalog.language}"])
    ours["publisher_name"] = catalog.publisher_name
    for key in ("publisher_uri", "publisher_url", "contact_name", "contact_email",
                "contact_uri"):
        if getattr(catalog, key):
            ours[key] = getattr(catalog, key)
    for key, value in release.provenance.items():
        ours[f"provenance_{key}"] = extra_value(value)
    ours["provenance"] = _provenance_text(release.provenance)
    statement = _dictionary_statement(release)
    for key, extra in STATEMENT_EXTRAS.items():
        if statement.get(key):
            ours[extra] = statement[key]
    extras = {k: v for k, v in old.items() if k not in _stale_keys(old, ours)}
    extras.update(ours)
    notes = release.description
    if statement.get("post_processing"):
        notes += ("\n\nPost-processing: " + statement["post_processing"].rstrip(".") + ". "
                  + "Effect on sums: " + statement.get("effect_on_sums", "not stated")
                  .rstrip(".") + ".")
    return {
        "name": release.name,
        "title": release.title,
        "notes": notes,
        "license_id": licence_id,
        "tags": [{"name": t} for t in sorted(set(release.tags))],
        "extras": [{"key": k, "value": v} for k, v in sorted(extras.items())],
    }


def _stale_keys(old: dict[str, str], ours: dict[str, str]) -> set[str]:
    """Keys of ``old`` this mapping owns but no longer writes (e.g. ``epsilon`` after the
    method changed). Per-partition sentences and foreign keys are kept."""
    owned = set(_PRIVACY_LABELS) | {"privacy", "spatial_uri", "contact_uri",
                                    "publisher_uri", "publisher_url"} | set(
        STATEMENT_EXTRAS.values())
    try:
        owned |= set(flatten_privacy(json.loads(old.get("privacy_parameters") or "{}")))
    except (ValueError, AttributeError):
        pass
    return {k for k in old if k not in ours and (k in owned or k.startswith("provenance_"))}


def _dictionary_statement(release: DatasetRelease) -> dict[str, str]:
    from publish.frictionless import privacy_statement

    return privacy_statement(release.name, (release.privacy or {}).get("privacy_method"),
                             unit=(release.privacy or {}).get("privacy_unit"))


def _inclusive_end(end: str) -> str:
    """DatasetRelease ends are exclusive; DCAT's endDate is the last covered day."""
    try:
        return (dt.date.fromisoformat(end) - dt.timedelta(days=1)).isoformat()
    except ValueError:
        return end


def _provenance_text(provenance: dict[str, Any]) -> str:
    parts = [f"Produced by the OpenCity pipeline {provenance.get('pipeline_version', '?')}"]
    if provenance.get("run_id"):
        parts.append(f"run {provenance['run_id']}")
    inputs = provenance.get("input_hashes") or {}
    if inputs:
        parts.append(f"from {len(inputs)} input file(s) identified by SHA-256 "
                     "(see provenance_input_hashes)")
    return ", ".join(parts) + "."
