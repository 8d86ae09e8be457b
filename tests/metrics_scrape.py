"""Reading a /metrics page in tests: the samples by name and labels, and the families it exposes."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample, and the exposition's `# TYPE` lines (name -> type)."""

    samples: list[tuple[str, dict[str, str], float]]
    types: dict[str, str]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
        return sum(
            value
            for sample, sample_labels, value in self.samples
            if sample == name and all(sample_labels.get(k) == v for k, v in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            sample == name and all(sample_labels.get(k) == v for k, v in labels.items())
            for sample, sample_labels, _ in self.samples
        )


def parse(text: str) -> Scrape:
    samples = [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]
    return Scrape(samples, dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE)))


async def scrape(url: str, token: str | None = None) -> Scrape:
    """GET `url` (a /metrics page) and parse it; it must answer 200 in the text format."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url, headers=headers)
    assert response.status_code == 200, f"{url}: {response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4"), response.headers
    return parse(response.text)
