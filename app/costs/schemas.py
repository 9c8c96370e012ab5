from datetime import date

from pydantic import BaseModel, Field

from app.generation.schemas import GenerationKindName, Priority


class CostRow(BaseModel):
    kind: GenerationKindName
    model: str
    priority: Priority
    generations: int
    """Generations and batch items that called the model (charged or not)."""
    input_tokens: int
    output_tokens: int
    cost_usd_micros: int | None
    """Model cost in micro-dollars from the price table (economy at half price); null for a
    model without a price (add it to `MODEL_PRICES`)."""
    cost_per_credit_usd_micros: int | None
    """Model cost per credit charged, in micro-dollars (null when nothing was charged)."""


class CostTotals(BaseModel):
    generations: int
    input_tokens: int
    output_tokens: int
    cost_usd_micros: int
    """Of the rows with a price."""
    cost_per_credit_usd_micros: int | None


class CostReport(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "from": "2026-11-01",
                    "to": "2026-11-30",
                    "rows": [
                        {
                            "kind": "meta_title",
                            "model": "claude-haiku-5-5",
                            "priority": "standard",
                            "generations": 1200,
                            "input_tokens": 1080000,
                            "output_tokens": 21600,
                            "cost_usd_micros": 118800,
                            "cost_per_credit_usd_micros": 99,
                        }
                    ],
                    "totals": {
                        "generations": 1200,
                        "input_tokens": 1080000,
                        "output_tokens": 21600,
                        "cost_usd_micros": 118800,
                        "cost_per_credit_usd_micros": 99,
                    },
                }
            ]
        },
        "populate_by_name": True,
    }

    from_: date = Field(alias="from", serialization_alias="from")
    """First day (UTC) of the report."""
    to: date
    """Last day (UTC), inclusive."""
    rows: list[CostRow]
    totals: CostTotals
