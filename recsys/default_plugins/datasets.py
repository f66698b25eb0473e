"""Built-in dataset converters, registered like any plugin's: MovieLens, Amazon Reviews, CSV."""

from __future__ import annotations

from recsys.hookspecs import hookimpl

_CONVERTERS = "recsys.data.converters"


@hookimpl
def register_datasets(register):
    register("ml-100k", f"{_CONVERTERS}.movielens.convert_ml100k")
    register("ml-1m", f"{_CONVERTERS}.movielens.convert_ml1m")
    register("ml-latest", f"{_CONVERTERS}.movielens.convert_ml_latest")
    register("amazon-2014", f"{_CONVERTERS}.amazon.convert_amazon2014")
    register("amazon-2018", f"{_CONVERTERS}.amazon.convert_amazon2018")
    register("amazon-2023", f"{_CONVERTERS}.amazon.convert_amazon2023")
    register("csv", f"{_CONVERTERS}.csv_pair.convert")
