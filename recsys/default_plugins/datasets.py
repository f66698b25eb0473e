"""Built-in dataset converters, registered like any plugin's: MovieLens, Amazon Reviews, CSV."""

from __future__ import annotations

from recsys.data.converters import amazon, csv_pair, movielens
from recsys.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    register("ml-100k", movielens.convert_ml100k)
    register("ml-1m", movielens.convert_ml1m)
    register("ml-latest", movielens.convert_ml_latest)
    register("amazon-2014", amazon.convert_amazon2014)
    register("amazon-2018", amazon.convert_amazon2018)
    register("amazon-2023", amazon.convert_amazon2023)
    register("csv", csv_pair.convert)
