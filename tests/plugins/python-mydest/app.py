import logging
from typing import Tuple, Union

from bizon_plugin import Destination

logger = logging.getLogger(__name__)


class MyDestDestination(Destination):
    def open(self, config):
        # Initialize client here if needed (config is the pipeline's plugin_config)
        self.config = config

    def check_connection(self) -> bool:
        # Test connectivity
        return True

    def write_records(self, df_destination_records) -> Tuple[bool, Union[str, None]]:
        """
        Write records to destination.

        Batch columns:
        - bizon_id: str (unique record ID)
        - bizon_extracted_at: datetime
        - bizon_loaded_at: datetime
        - source_data: str (JSON string of record)
        - source_record_id: str
        """
        try:
            for record in df_destination_records.iter_rows(named=True):
                # record["source_data"] contains the JSON payload
                pass

            logger.info(f"Wrote {df_destination_records.height} records")
            return True, None
        except Exception as e:
            return False, str(e)

    def finalize(self) -> bool:
        # Optional: cleanup after all writes complete
        return True
