from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

GroupBy = Literal["day", "site", "kind"]


class UsageBucket(BaseModel):
    key: str
    """The day (`YYYY-MM-DD`, UTC), the site id or the kind."""
    credits: int
    """Credits consumed by completed generations."""
    generations: int
    """Completed generations charged."""


class UsageRead(BaseModel):
    model_config = ConfigDict(
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "group_by": "day",
                    "from": "2026-11-01",
                    "to": "2026-11-30",
                    "buckets": [
                        {"key": "2026-11-02", "credits": 72, "generations": 72},
                        {"key": "2026-11-05", "credits": 3, "generations": 3},
                    ],
                    "total_credits": 75,
                }
            ]
        },
    )

    group_by: GroupBy
    from_: date = Field(alias="from", serialization_alias="from")
    to: date
    buckets: list[UsageBucket]
    """Only buckets with usage, keys ascending."""
    total_credits: int
