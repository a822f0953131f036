"""Person re-identification: the re-ID training losses and the Market-1501 retrieval metrics."""
