"""The plain sections of a bench grid: the model, the images and the targets, and the
number types every section uses (TOML strings and booleans in a numeric field are typos)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..errors import UserInputError

__all__ = ["ImagesSpec", "ModelSpec", "Real", "TargetsSpec", "Whole"]


def _number(v: Any) -> Any:
    # TOML has numbers: "0.05" or true in a numeric axis is a typo that lax parsing would take.
    if isinstance(v, str | bool):
        raise ValueError(f"expected a number, got {v!r}")
    return v


Real = Annotated[float, BeforeValidator(_number)]
Whole = Annotated[int, BeforeValidator(_number)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _spec_text(text: str, info: ValidationInfo, **options: Any) -> str:
    """A model spec's canonical string, relative paths from the config file's folder."""
    from ..targets.spec import parse_spec

    base = (info.context or {}).get("base")
    try:
        return parse_spec(text, base=base, **options).text
    except UserInputError as e:
        raise ValueError(str(e)) from None


class ModelSpec(_Frozen):
    name: str | None = None
    factory: str | None = Field(
        None,
        description="'module:function' returning a bbattack Classifier",
        pattern=r"^[\w.]+:\w+$",
    )
    backend: Literal["auto", "torch", "onnx"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _default(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and data.get("name") is None and data.get("factory") is None:
            return {**data, "name": "efficientnet-lite0"}
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            # One canonical spec string (lite1 and efficientnet-lite1 are one model and one
            # case id; a file's path absolute, its preprocessing options folded in), which
            # every worker loads the same model from.
            from ..targets.spec import Preprocessing

            keys = set(data) & set(Preprocessing.model_fields)
            options = {k: data[k] for k in keys}
            return {
                **{k: v for k, v in data.items() if k not in keys},
                "name": _spec_text(data["name"], info, **options),
            }
        return data

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if self.name is not None and self.factory is not None:
            raise ValueError("give either name or factory, not both")
        return self

    def describe(self) -> str:
        return self.name or f"factory {self.factory}"


class ImagesSpec(_Frozen):
    photos: list[str] | Literal["all"] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    sets: list[Literal["bundled", "foolbox", "ai-benchmark"]] = Field(
        default_factory=list,
        description="photo sets from packages; only the photos the target qualifies are kept",
    )
    min_confidence: Real = Field(
        0.5, gt=0, le=1, description="an unlabelled set photo qualifies at this top-1 probability"
    )
    limit: Whole | None = Field(None, ge=1, description="use the first N images")
    split: Literal["tuning", "heldout"] | None = Field(
        None,
        description="the project's tuning or held-out photos (bbattack.photosets.SPLITS), "
        "alone: a split grid takes no other images",
    )

    @field_validator("photos")
    @classmethod
    def _known(cls, v: list[str] | str) -> list[str] | str:
        if v == "all":
            return v
        from ..images import bundled_photos

        have = bundled_photos()
        for i, name in enumerate(v):
            if name not in have:
                raise ValueError(f"[{i}] {name!r} is not a bundled photo; have: {', '.join(have)}")
        if len(set(v)) != len(v):
            raise ValueError("a photo is listed twice")
        return v

    @model_validator(mode="after")
    def _some(self) -> ImagesSpec:
        if self.split is not None and (self.photos or self.paths or self.sets):
            # Defaults chosen on one split and measured on the other: never both in one grid.
            raise ValueError(
                f"split {self.split!r} takes no photos, paths or sets beside it "
                "(the tuning and held-out photos are never mixed)"
            )
        if not self.photos and not self.paths and not self.sets and self.split is None:
            raise ValueError("give photos, paths and/or sets, or a split")
        if len(set(self.sets)) != len(self.sets):
            raise ValueError("a photo set is listed twice")
        if "bundled" in self.sets and self.photos:
            raise ValueError("the bundled set and bundled photos by name: give one")
        return self

    def set_names(self) -> list[str]:
        """The package photo sets the images come from: the split's, or ``sets``."""
        if self.split is not None:
            from ..photosets import SPLITS

            return [name for name, _ in SPLITS[self.split]]
        return list(self.sets)


class TargetsSpec(_Frozen):
    pool: Literal["classes", "images"] = "classes"
    per_image: Whole = Field(1, ge=1, le=100)
