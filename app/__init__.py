"""RankFrame credits service."""
