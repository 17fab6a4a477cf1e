"""Synthetic Bizon source for the bizon-host baseline benchmark.

How it is plugged in (Bizon 0.6.4, bizon/source/discover.py):
  Bizon supports custom sources *by file path*, no monkeypatching needed. Either
    * `source.source_file_path: /abs/path/bench_source.py` in the YAML, or
    * `bizon run config.yml --custom-source bench_source.py` (the CLI just writes that path
      into `config["source"]["source_file_path"]`, bizon/cli/utils.py).
  `get_external_source_class_by_source_and_stream()` imports the file, keeps the classes that
  subclass AbstractSource, are not abstract and whose `streams()` contains `source.stream`.
  The source's own config class (get_config_class) is then validated against the raw
  `source:` mapping, so the extra keys below (num_records, page_size) are declared there.

Records, for i in 0..num_records-1, in pages of page_size (default 1000):
  id=str(i), data={"id": i, "name": "bizon-<i>", "age": i % 97, "active": i % 2 == 0,
                   "score": i * 0.5, "tags": ["a", "b"]}
"""

from typing import List, Optional, Tuple, Type

from pydantic import Field

from bizon.source.config import SourceConfig
from bizon.source.models import SourceIteration, SourceRecord
from bizon.source.source import AbstractSource


class BenchSourceConfig(SourceConfig):
    num_records: int = Field(1_000_000, description="Total number of records to yield")
    page_size: int = Field(1000, description="Records per iteration (page)")


class BenchSource(AbstractSource):
    def __init__(self, config: BenchSourceConfig):
        super().__init__(config)
        self.config: BenchSourceConfig = config

    @staticmethod
    def streams() -> List[str]:
        return ["records"]

    @staticmethod
    def get_config_class() -> Type[SourceConfig]:
        return BenchSourceConfig

    def get_authenticator(self):
        return None

    def check_connection(self) -> Tuple[bool, Optional[str]]:
        return True, None

    def get_total_records_count(self) -> Optional[int]:
        return self.config.num_records

    def get(self, pagination: dict = None) -> SourceIteration:
        start = (pagination or {}).get("offset", 0)
        end = min(start + self.config.page_size, self.config.num_records)
        records = [
            SourceRecord(
                id=str(i),
                data={
                    "id": i,
                    "name": f"bizon-{i}",
                    "age": i % 97,
                    "active": i % 2 == 0,
                    "score": i * 0.5,
                    "tags": ["a", "b"],
                },
            )
            for i in range(start, end)
        ]
        # An empty next_pagination tells Bizon the source is exhausted (bizon/source/cursor.py).
        next_pagination = {"offset": end} if end < self.config.num_records else {}
        return SourceIteration(next_pagination=next_pagination, records=records)
