"""Captions for ShapesWorld scenes, written from the ground truth in varied wording.

Variation comes from sentence templates, synonyms for sizes, motions and backgrounds, at most one synonym per colour,
and a random object order. Shape words are never replaced ("circle", "square", "triangle"), so a caption always
names every object's shape and colour unambiguously.

Templates come in two disjoint sets: ``"train"`` (used to write datasets) and ``"heldout"`` (sentence structures
and connectives never seen in training), so ShapesBench can test whether a model generalises to paraphrases.
Synonym pools are shared by both sets. A third split, ``"augment"``, is the train set plus more sentence structures
(still disjoint from the held-out ones): the extra captions a dataset can store per clip so a model sees each clip in
several wordings, while ShapesBench's train-wording prompts keep using ``"train"`` alone.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from seedkit.data.shapes import Scene, SceneObject

SPLITS = ("train", "heldout", "augment")

# colour -> words naming it (the canonical name first); synonyms are used with probability COLOR_SYNONYM_PROBABILITY.
COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "scarlet"),
    "orange": ("orange", "tangerine"),
    "yellow": ("yellow", "golden"),
    "green": ("green", "emerald"),
    "cyan": ("cyan", "turquoise"),
    "blue": ("blue", "cobalt"),
    "purple": ("purple", "violet"),
    "pink": ("pink", "rose"),
}
COLOR_SYNONYM_PROBABILITY = 0.2
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "black": ("black", "pitch-black"),
    "white": ("white", "bright white"),
    "gray": ("gray", "grey", "mid-gray"),
    "dark gray": ("dark gray", "dark grey", "charcoal"),
}
BACKGROUND_NOUNS = ("background", "backdrop")
# motion -> (participles: "a red circle moving left", present tense: "a red circle moves left")
MOTION_PHRASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "left": (
        ("moving left", "drifting to the left", "sliding leftward", "travelling left"),
        ("moves left", "drifts to the left", "slides leftward", "travels left"),
    ),
    "right": (
        ("moving right", "drifting to the right", "sliding rightward", "travelling right"),
        ("moves right", "drifts to the right", "slides rightward", "travels right"),
    ),
    "up": (
        ("moving up", "rising", "floating upward", "drifting upward"),
        ("moves up", "rises", "floats upward", "drifts upward"),
    ),
    "down": (
        ("moving down", "falling", "sinking", "drifting downward"),
        ("moves down", "falls", "sinks", "drifts downward"),
    ),
    "bouncing": (
        ("bouncing around", "bouncing off the walls", "ricocheting around the frame"),
        ("bounces around", "bounces off the walls", "ricochets around the frame"),
    ),
    "still": (
        ("standing still", "staying still", "motionless", "resting in place"),
        ("stands still", "stays still", "does not move", "rests in place"),
    ),
}

# Single-shot templates. {P}: objects with participles; {S}: one sentence per object; {bg}: "a black background";
# {bg_color}: "black". Image templates get objects without motion in {P} and {S}.
VIDEO_TEMPLATES: dict[str, tuple[str, ...]] = {
    "train": (
        "{P} on {bg}.",
        "On {bg}, {P}.",
        "A video of {P} on {bg}.",
        "{S} The background is {bg_color}.",
    ),
    "heldout": (
        "Against {bg}, {P}.",
        "Footage showing {P}, set against {bg}.",
        "In this clip, {P} over {bg}.",
        "{S} It all happens on {bg}.",
    ),
}
IMAGE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "train": (
        "{P} on {bg}.",
        "On {bg}, {P}.",
        "An image of {P} on {bg}.",
        "A picture of {P}; the background is {bg_color}.",
    ),
    "heldout": (
        "Against {bg}, {P}.",
        "A still frame showing {P}, set against {bg}.",
        "In this picture, {P} over {bg}.",
        "{P}, pictured on {bg}.",
    ),
}
# Sentence structures only the "augment" split adds to the train ones.
AUGMENT_VIDEO_TEMPLATES = (
    "There is {P} on {bg}.",
    "The clip shows {P} on {bg}.",
    "{bg_color} background: {P}.",
    "A short animation of {P} on {bg}.",
    "{S} Behind them is {bg}.",
    "{P} in front of {bg}.",
)
AUGMENT_IMAGE_TEMPLATES = (
    "There is {P} on {bg}.",
    "{bg_color} background: {P}.",
    "A drawing of {P} on {bg}.",
    "{P} in front of {bg}.",
)
VIDEO_TEMPLATES["augment"] = VIDEO_TEMPLATES["train"] + AUGMENT_VIDEO_TEMPLATES
IMAGE_TEMPLATES["augment"] = IMAGE_TEMPLATES["train"] + AUGMENT_IMAGE_TEMPLATES
# Later shots of a multi-shot clip: {framing} is a lead-in naming the camera framing.
LATER_SHOT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "train": ("{framing}{P} on {bg}.", "{framing}on {bg}, {P}."),
    "heldout": ("{framing}{P}, seen against {bg}.", "{framing}against {bg}, {P}."),
}
FRAMING_LEADS: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {"close": ("In close-up, ", "Up close, "), "wide": ("In a wide shot, ", "From afar, ")},
    "heldout": {
        "close": ("Zooming in, ", "In a closer view, "),
        "wide": ("Seen from a distance, ", "In a wider view, "),
    },
}
# Whole-clip captions join the shot captions: {first}, then each later shot through a connective.
SHOT_CONNECTIVES: dict[str, tuple[str, ...]] = {
    "train": ("Then, {shot}", "Next, {shot}", "Afterwards, {shot}"),
    "heldout": ("After a hard cut, {shot}", "The scene changes; {shot}", "Following that, {shot}"),
}
for _table in (LATER_SHOT_TEMPLATES, FRAMING_LEADS, SHOT_CONNECTIVES):
    _table["augment"] = _table["train"]
# Carried subjects: "the same red circle now moves up".
SAME_SUBJECT_WORDS = ("the same",)


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def color_word(color: str, rng: np.random.Generator) -> str:
    words = COLOR_WORDS[color]
    return words[1] if rng.random() < COLOR_SYNONYM_PROBABILITY else words[0]


def _noun_phrase(obj: "SceneObject", rng: np.random.Generator, carried: bool) -> str:
    color = color_word(obj.color, rng)
    if carried:
        return f"{SAME_SUBJECT_WORDS[0]} {color} {obj.shape}"
    size = _pick(rng, SIZE_WORDS[obj.size])
    return f"{_article(size)} {size} {color} {obj.shape}"


def _object_phrases(
    objects: list["SceneObject"], rng: np.random.Generator, with_motion: bool, carried_ids: set[int]
) -> tuple[str, str]:
    """Objects (random order) as one participle list ``P`` and as present-tense sentences ``S``."""
    order = rng.permutation(len(objects))
    participles, sentences = [], []
    for index in order:
        obj = objects[int(index)]
        carried = obj.subject_id in carried_ids
        noun = _noun_phrase(obj, rng, carried)
        if not with_motion:
            participles.append(noun)
            sentences.append(_capitalize(noun) + ".")
            continue
        choice = int(rng.integers(len(MOTION_PHRASES[obj.motion][0])))
        participle, present = MOTION_PHRASES[obj.motion][0][choice], MOTION_PHRASES[obj.motion][1][choice]
        now = "now " if carried else ""
        participles.append(f"{noun} {now}{participle}")
        sentences.append(_capitalize(f"{noun} {now}{present}."))
    return _join(participles), " ".join(sentences)


def _background_phrases(background: str, rng: np.random.Generator) -> tuple[str, str]:
    color = _pick(rng, BACKGROUND_WORDS[background])
    noun = _pick(rng, BACKGROUND_NOUNS)
    return f"{_article(color)} {color} {noun}", color


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown caption split {split!r}; valid splits: {', '.join(SPLITS)}")


def shot_caption(
    scene: "Scene", shot_index: int, rng: np.random.Generator, split: str = "train"
) -> str:
    """Caption of one shot. Later shots open with their framing and call carried subjects "the same ..."."""
    _check_split(split)
    shot = scene.shots[shot_index]
    earlier = {obj.subject_id for previous in scene.shots[:shot_index] for obj in previous.objects}
    carried = {obj.subject_id for obj in shot.objects} & earlier
    with_motion = not scene.is_image
    participles, sentences = _object_phrases(shot.objects, rng, with_motion, carried)
    background, background_color = _background_phrases(scene.background, rng)
    if shot_index == 0:
        templates = (IMAGE_TEMPLATES if scene.is_image else VIDEO_TEMPLATES)[split]
        text = _pick(rng, templates).format(P=participles, S=sentences, bg=background, bg_color=background_color)
        return _capitalize(text)
    framing = _pick(rng, FRAMING_LEADS[split][shot.framing])
    text = _pick(rng, LATER_SHOT_TEMPLATES[split]).format(framing=framing, P=participles, bg=background)
    return _capitalize(text)


def caption_scene(scene: "Scene", rng: np.random.Generator, split: str = "train") -> tuple[str, list[str]]:
    """``(whole-clip caption, one caption per shot)``; a single-shot clip's caption is its shot's caption."""
    _check_split(split)
    shot_captions = [shot_caption(scene, index, rng, split) for index in range(len(scene.shots))]
    parts = [shot_captions[0]]
    for caption in shot_captions[1:]:
        parts.append(_pick(rng, SHOT_CONNECTIVES[split]).format(shot=_lower_first(caption)))
    return " ".join(parts), shot_captions


def caption_for(scene: "Scene", rng: np.random.Generator, split: str = "train") -> str:
    """A whole-clip caption of ``scene`` drawn from the ``split`` ("train", "heldout" or "augment") templates."""
    return caption_scene(scene, rng, split)[0]


def apply_captions(scene: "Scene", rng: np.random.Generator, split: str = "train") -> "Scene":
    """Write fresh captions into ``scene.caption`` and every ``shot.caption`` (in place); returns the scene."""
    caption, shot_captions = caption_scene(scene, rng, split)
    scene.caption = caption
    for shot, text in zip(scene.shots, shot_captions):
        shot.caption = text
    return scene


def shape_word_edits(caption: str) -> list[str]:
    """Every caption made from ``caption`` by replacing one shape word with another shape.

    Captions always name shapes by their canonical words (see the module docstring), so for a ShapesWorld caption
    each edit differs from it in one object's shape only: "a red circle moving left" gives "a red square moving
    left" and "a red triangle moving left". Empty for captions that name no shape (real footage, the empty prompt).
    """
    from seedkit.data.shapes import SHAPES

    edits = []
    for match in re.finditer(r"\b(" + "|".join(SHAPES) + r")\b", caption):
        for shape in SHAPES:
            if shape != match.group(1):
                edits.append(caption[: match.start()] + shape + caption[match.end() :])
    return edits
