"""ShapesWorld captions: faithful to the ground truth, varied, and split into train and held-out templates."""

import re

import numpy as np
import pytest

from seedkit.data.shapes import SHAPES, Scene, sample_scene, scene_from_prompt_spec
from seedkit.data.shapes_captions import (
    BACKGROUND_WORDS,
    COLOR_WORDS,
    MOTION_PHRASES,
    SIZE_WORDS,
    caption_for,
    caption_scene,
    shape_word_edits,
)


def _mentions(text: str, words) -> bool:
    return any(re.search(rf"\b{re.escape(word)}\b", text) for word in words)


def _motion_words(motion: str) -> tuple[str, ...]:
    participles, present = MOTION_PHRASES[motion]
    return participles + present


@pytest.mark.parametrize("split", ["train", "heldout", "augment"])
def test_captions_name_every_object_colour_shape_size_motion_and_background(split):
    for seed in range(40):
        num_frames = 1 if seed % 5 == 0 else 17
        scene = sample_scene(np.random.default_rng(seed), 48, 64, num_frames, caption_split=split)
        text = scene.caption.lower()
        for obj in scene.shots[0].objects:
            assert _mentions(text, COLOR_WORDS[obj.color]), (obj.color, text)
            assert _mentions(text, (obj.shape,)), (obj.shape, text)
            assert _mentions(text, SIZE_WORDS[obj.size]), (obj.size, text)
            if num_frames > 1:
                assert _mentions(text, _motion_words(obj.motion)), (obj.motion, text)
        assert _mentions(text, BACKGROUND_WORDS[scene.background]), (scene.background, text)
        # No colour of the palette that is absent from the scene is named.
        present = {obj.color for obj in scene.shots[0].objects}
        for color, words in COLOR_WORDS.items():
            if color not in present:
                assert not _mentions(text, words), (color, text)


@pytest.mark.parametrize("split", ["train", "augment"])
def test_shape_word_edits_are_the_captions_of_the_scene_with_another_shape(split):
    for seed in range(30):
        rng = np.random.default_rng(seed)
        scene = sample_scene(rng, 48, 64, 1 if seed % 5 == 0 else 17, max_objects=1)
        caption_seed = int(rng.integers(2**31))
        caption = caption_for(scene, np.random.default_rng(caption_seed), split)
        expected = []
        for shape in SHAPES:
            data = scene.to_dict()
            if shape != data["shots"][0]["objects"][0]["shape"]:
                data["shots"][0]["objects"][0]["shape"] = shape
                expected.append(caption_for(Scene.from_dict(data), np.random.default_rng(caption_seed), split))
        assert sorted(shape_word_edits(caption)) == sorted(expected), caption


def test_shape_word_edits_change_one_object_at_a_time_and_leave_other_words_alone():
    caption = "A small red circle moving left and a big blue square rising, circles aside."
    assert shape_word_edits(caption) == [
        "A small red square moving left and a big blue square rising, circles aside.",
        "A small red triangle moving left and a big blue square rising, circles aside.",
        "A small red circle moving left and a big blue circle rising, circles aside.",
        "A small red circle moving left and a big blue triangle rising, circles aside.",
    ]
    assert shape_word_edits("a person walking a dog") == [] and shape_word_edits("") == []


def test_motion_phrases_do_not_collide():
    for motion, words in ((m, _motion_words(m)) for m in MOTION_PHRASES):
        for other in MOTION_PHRASES:
            if other != motion:
                assert not any(_mentions(phrase, _motion_words(other)) for phrase in words), (motion, other)


def test_captions_vary_across_seeds_and_object_order_varies():
    spec = {"objects": [{"shape": "circle", "color": "red", "size": "large", "motion": "left"},
                        {"shape": "square", "color": "blue", "size": "small", "motion": "up"}], "background": "black"}
    scene = scene_from_prompt_spec(spec, 0, 32, 32, 17)
    captions = {caption_for(scene, np.random.default_rng(seed)) for seed in range(40)}
    assert len(captions) > 25
    red_first = [c.lower().find("circle") < c.lower().find("square") for c in captions]
    assert any(red_first) and not all(red_first)
    many = {sample_scene(np.random.default_rng(seed), 32, 32, 17).caption for seed in range(30)}
    assert len(many) == 30


def test_heldout_templates_never_produce_a_train_caption():
    spec = {"objects": [{"shape": "triangle", "color": "green", "size": "small", "motion": "bouncing"}],
            "background": "gray"}
    for num_frames, shots in ((17, None), (1, None), (17, 2)):
        if shots:
            spec_used = {"shots": [{"objects": [{"subject_id": 0, **spec["objects"][0]}]},
                                   {"objects": [{"subject_id": 0, "motion": "down"}], "framing": "close"}],
                         "background": "gray"}
        else:
            motion = "still" if num_frames == 1 else "bouncing"
            spec_used = dict(spec, objects=[dict(spec["objects"][0], motion=motion)])
        scene = scene_from_prompt_spec(spec_used, 0, 32, 32, num_frames)
        train = {caption_for(scene, np.random.default_rng(seed), "train") for seed in range(200)}
        heldout = {caption_for(scene, np.random.default_rng(seed), "heldout") for seed in range(200)}
        augment = {caption_for(scene, np.random.default_rng(seed), "augment") for seed in range(400)}
        assert len(train) > 10 and len(heldout) > 10
        assert not train & heldout
        # The augment split adds sentence structures to the train ones, none of them held out.
        assert not augment & heldout and len(augment - train) > 10 and train & augment
        # Sentence frames differ, not just synonyms: strip the content words and compare the skeletons.
        def skeleton(text):
            return re.sub(r"\b(green|emerald|triangle|small|little|tiny|gray|grey|mid-gray|background|backdrop)\b",
                          "_", text)
        assert not {skeleton(c) for c in train | augment} & {skeleton(c) for c in heldout}
    with pytest.raises(ValueError, match="valid splits"):
        caption_for(scene, np.random.default_rng(0), "test")


def test_multi_shot_captions_say_the_same_subject_and_join_into_the_clip_caption():
    for seed in range(10):
        scene = sample_scene(np.random.default_rng(seed), 48, 48, 33, num_shots=3)
        caption, shot_captions = scene.caption, scene.shot_captions
        assert len(shot_captions) == 3 and all(shot_captions)
        for index, (shot, text) in enumerate(zip(scene.shots, shot_captions)):
            earlier = {o.subject_id for s in scene.shots[:index] for o in s.objects}
            for obj in shot.objects:
                assert _mentions(text.lower(), COLOR_WORDS[obj.color]) and obj.shape in text
                same = re.search(rf"the same ({'|'.join(COLOR_WORDS[obj.color])}) {obj.shape}", text)
                assert bool(same) == (obj.subject_id in earlier), text
            # Every shot caption is in the whole-clip caption (later ones lower-cased after a connective).
            assert text[1:] in caption
        whole, shots = caption_scene(scene, np.random.default_rng(seed))
        assert len(shots) == 3 and all(shot[1:] in whole for shot in shots)
