"""The data layer: every stage loads its data through load_data (see alignment.data.prepare for the steps)."""

from alignment.data.args import DataArguments
from alignment.data.prepare import PreparedData, load_data
from alignment.data.sources import read_rows

__all__ = ["DataArguments", "PreparedData", "load_data", "read_rows"]
