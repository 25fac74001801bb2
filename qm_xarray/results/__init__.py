"""The results API of the seed documentation: StreamsManager and the single-stream fetchers."""

from .fetchers import (
    AnySingleStreamFetcher,
    BaseSingleStreamFetcher,
    SingleStreamMultipleResultFetcher,
    SingleStreamSingleResultFetcher,
    raise_if_lost,
)
from .multiple import MultipleStreamsFetcher
from .streams_manager import StreamingResultFetcher, StreamsManager

SingleStreamingResultFetcher = SingleStreamSingleResultFetcher
MultipleStreamingResultFetcher = SingleStreamMultipleResultFetcher

__all__ = ["AnySingleStreamFetcher", "BaseSingleStreamFetcher", "MultipleStreamingResultFetcher",
           "MultipleStreamsFetcher", "SingleStreamMultipleResultFetcher",
           "SingleStreamSingleResultFetcher", "SingleStreamingResultFetcher", "StreamingResultFetcher",
           "StreamsManager", "raise_if_lost"]
