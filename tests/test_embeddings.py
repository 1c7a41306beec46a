"""Embeddings on their principal components without a browser: the projection against an
independent PCA, nearest neighbours against brute force, Hugging Face models, and the
`EmbeddingMap` widget: its labels, its controls, live training and bad choices."""

import math

import pytest
from _needs import need

need("ipywidgets", "pip install -e .")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lmlab import ConfigError  # noqa: E402
from lmlab import interpret  # noqa: E402
from lmlab.train import TrainConfig, Trainer  # noqa: E402
from lmlab.widgets.embeddings import EmbeddingMap, character_class  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog. THE END 42!\n" * 200



def reference_pca(matrix: torch.Tensor, dims: int):
    """numpy's SVD of the centred matrix: (coords [N, dims], components [dims, C], variances of
    every component [K])."""
    x = matrix.double().numpy()
    x = x - x.mean(0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:dims].T, vt[:dims], s**2


def trace_points(widget) -> list[str]:
    return [t for trace in widget.figure.data for t in trace.text]


# ---- the engine ----------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_projection_is_the_centred_matrix_on_its_top_singular_vectors(model, data, dims):
    p = interpret.embedding_projection(model, data.tokenizer, "tokens", dims)
    assert torch.equal(p.matrix, model.transformer.wte.weight.detach())
    coords, components, variances = reference_pca(p.matrix, dims)
    assert p.coords.shape == (data.vocab_size, dims) and p.components.shape == (dims, 16)
    signs = np.sign((p.components.double().numpy() * components).sum(1))  # ±1 per component
    assert np.abs(signs).min() == 1
    np.testing.assert_allclose(p.coords.numpy(), coords * signs, atol=1e-5)
    np.testing.assert_allclose(p.components.numpy(), components * signs[:, None], atol=1e-5)
    np.testing.assert_allclose(p.explained.numpy(), (variances / variances.sum())[:dims], rtol=1e-5)


def test_each_components_largest_loading_is_positive(model, data):
    for which in ("tokens", "positions"):
        components = interpret.embedding_projection(model, data.tokenizer, which, 3).components
        largest = components.gather(1, components.abs().argmax(1, keepdim=True))
        assert (largest > 0).all()
        model.transformer.wte.weight.data.neg_()  # the same directions, read the other way
        model.transformer.wpe.weight.data.neg_()
        again = interpret.embedding_projection(model, data.tokenizer, which, 3)
        assert torch.allclose(again.components, components, atol=1e-6)


def test_explained_variance_is_the_share_of_each_component(model, data):
    p = interpret.embedding_projection(model, data.tokenizer, "tokens", 3)
    centred = p.matrix - p.matrix.mean(0)
    total = centred.square().sum()
    assert p.explained.tolist() == pytest.approx((p.coords.square().sum(0) / total).tolist(), rel=1e-4)
    assert p.explained[0] >= p.explained[1] >= p.explained[2] > 0
    assert float(p.explained.sum()) <= 1
    flat = interpret.embedding_projection(model, data.tokenizer, "tokens", 2)
    assert torch.allclose(flat.explained, p.explained[:2]) and torch.allclose(flat.coords, p.coords[:, :2])


def test_labels_are_the_tokens_and_the_positions(model, data):
    tokens = interpret.embedding_projection(model, data.tokenizer, "tokens")
    assert tokens.labels == [data.tokenizer.token_text(i) for i in range(data.vocab_size)]
    assert "␣" in tokens.labels and "↵" in tokens.labels
    positions = interpret.embedding_projection(model, data.tokenizer, "positions", 3)
    assert positions.coords.shape == (32, 3) and positions.total == 32
    assert positions.labels == [f"pos {i}" for i in range(32)]
    assert torch.equal(positions.matrix, model.transformer.wpe.weight.detach())


def test_limit_maps_the_first_rows(model, data):
    p = interpret.embedding_projection(model, data.tokenizer, "tokens", limit=10)
    assert len(p.labels) == 10 and p.total == data.vocab_size
    coords, _, _ = reference_pca(model.transformer.wte.weight.detach()[:10], 2)
    np.testing.assert_allclose(np.abs(p.coords.numpy()), np.abs(coords), atol=1e-5)


@pytest.mark.parametrize("which, dims, fragment", [("words", 2, "choose 'tokens'"),
                                                   ("tokens", 4, "choose 2"),
                                                   ("positions", 1, "choose 2")])
def test_bad_choices_are_refused_with_what_to_do(model, data, which, dims, fragment):
    with pytest.raises(ConfigError, match=fragment):
        interpret.embedding_projection(model, data.tokenizer, which, dims)


def test_a_diverged_model_is_refused(model, data):
    model.transformer.wte.weight.data[3, 0] = math.nan
    with pytest.raises(ConfigError, match="nan"):
        interpret.embedding_projection(model, data.tokenizer)


def test_nearest_neighbours_agree_with_brute_force(model):
    matrix = model.transformer.wte.weight.detach()
    rows = matrix.double().tolist()

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    for index in (0, 7, len(rows) - 1):
        brute = sorted(((cosine(rows[index], rows[j]), j) for j in range(len(rows)) if j != index),
                       reverse=True)[:5]
        got = interpret.nearest_neighbours(matrix, index, k=5)
        assert [j for j, _ in got] == [j for _, j in brute]
        assert [s for _, s in got] == pytest.approx([s for s, _ in brute], abs=1e-5)
        table_rows, table_sims = interpret.neighbour_table(matrix, 5)
        assert table_rows[index].tolist() == [j for j, _ in got]
        assert table_sims[index].tolist() == pytest.approx([s for _, s in got], abs=1e-6)
    assert len(interpret.nearest_neighbours(matrix[:3], 1, k=5)) == 2  # only the other two
    with pytest.raises(ConfigError, match="outside"):
        interpret.nearest_neighbours(matrix, len(rows))


def test_a_hugging_face_gpt2_gives_the_same_maps(model, data):
    need("transformers", "pip install -e '.[hf]'")
    from lmlab.bench.peers import hf_twin

    twin = hf_twin(model)
    for which, dims in (("tokens", 2), ("positions", 3)):
        ours = interpret.embedding_projection(model, data.tokenizer, which, dims)
        theirs = interpret.embedding_projection(twin, data.tokenizer, which, dims)
        assert theirs.labels == ours.labels
        assert torch.allclose(theirs.coords, ours.coords, atol=1e-5)
        assert torch.allclose(theirs.explained, ours.explained, atol=1e-6)


def tiny_llama(vocab_size: int):
    need("transformers", "pip install -e '.[hf]'")
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2,
                                        num_key_value_heads=2, max_position_embeddings=32))


def test_a_model_with_rotary_positions_has_no_position_map(data):
    llama = tiny_llama(data.vocab_size)
    assert interpret.embedding_projection(llama, data.tokenizer).coords.shape == (data.vocab_size, 2)
    with pytest.raises(ConfigError, match="no learned position embeddings"):
        interpret.embedding_projection(llama, data.tokenizer, "positions")


@pytest.mark.parametrize("token, expected", [
    ("a", "vowel"), ("é", "vowel"), ("t", "consonant"), ("␣the", "consonant"), ("E", "upper case"),
    ("7", "digit"), ("␣", "punctuation/space"), ("↵", "punctuation/space"), ("!", "punctuation/space"),
    ("λ", "other"), ("\x00", "other")])
def test_character_classes(token, expected):
    assert character_class(token) == expected


# ---- the widget ------------------------------------------------------------------------------


def test_the_map_shows_every_token_where_the_projection_puts_it(model, data):
    w = EmbeddingMap(model, data.tokenizer)
    p = interpret.embedding_projection(model, data.tokenizer)
    assert "lmlab-embeddings" in w._dom_classes and w.status.value == ""
    shown = trace_points(w)
    assert sorted(shown) == sorted(p.labels) and len(shown) == data.vocab_size
    assert {t.name for t in w.figure.data} == {"vowel", "consonant", "upper case", "digit",
                                               "punctuation/space"}
    for trace in w.figure.data:
        assert trace.type == "scatter" and trace.mode == "markers+text"
        for label, x, y in zip(trace.text, trace.x, trace.y):
            i = p.labels.index(label)
            assert character_class(label) == trace.name
            assert (x, y) == pytest.approx(p.coords[i].tolist(), abs=1e-6)
    assert w.figure.layout.xaxis.title.text == f"PC1 ({float(p.explained[0]):.0%} of variance)"
    assert w.figure.layout.yaxis.title.text.startswith("PC2 (")


def test_hover_names_the_nearest_neighbours(model, data):
    w = EmbeddingMap(model, data.tokenizer)
    p = w.projection
    trace = w.figure.data[0]
    label, hover = trace.text[0], trace.hovertext[0]
    i = p.labels.index(label)
    assert hover.startswith(f"<b>{label}</b> (id {i})")
    for j, s in interpret.nearest_neighbours(p.matrix, i, k=5):
        assert f"{p.labels[j]}  {s:.2f}" in hover
    assert trace.hovertemplate == "%{hovertext}<extra></extra>"


def test_positions_and_3d_change_the_figure(model, data):
    w = EmbeddingMap(model, data.tokenizer)
    w.dims_box.value = 3
    assert w.dims == 3 and {t.type for t in w.figure.data} == {"scatter3d"}
    assert sorted(trace_points(w)) == sorted(w.projection.labels)
    assert all(len(t.z) == len(t.x) for t in w.figure.data)
    assert w.figure.layout.scene.zaxis.title.text.startswith("PC3 (")
    w.which_box.value = "positions"
    (trace,) = w.figure.data
    assert trace.type == "scatter3d" and list(trace.text) == [f"pos {i}" for i in range(32)]
    assert list(trace.marker.color) == list(range(32))  # no character classes: by position
    assert "coloured by position" in w.status.value
    w.dims_box.value = 2
    (trace,) = w.figure.data
    assert trace.type == "scatter" and not hasattr(trace, "z")
    positions = interpret.embedding_projection(model, None, "positions")
    assert list(trace.x) == pytest.approx(positions.coords[:, 0].tolist(), abs=1e-6)
    w.colour_box.value = "none"
    assert w.figure.data[0].marker.color == "#1c5d99" and w.status.value == ""


def test_a_bad_choice_is_shown_and_the_map_stays_usable(model, data):
    w = EmbeddingMap(model, data.tokenizer)
    before = [list(t.x) for t in w.figure.data]
    assert w.update(dims=4) is False
    assert "dims=4" in w.status.value and "lmlab-error" in w.status.value
    assert w.dims == 2 and w.dims_box.value == 2 and [list(t.x) for t in w.figure.data] == before
    w.dims_box.value = 3
    assert w.status.value == "" and w.figure.data[0].type == "scatter3d"

    started_wrong = EmbeddingMap(model, data.tokenizer, which="words")
    assert "which='words'" in started_wrong.status.value and "lmlab-error" in started_wrong.status.value
    assert sorted(trace_points(started_wrong)) == sorted(w.projection.labels)  # the token map instead
    started_wrong.which_box.value = "positions"
    assert started_wrong.which == "positions" and len(trace_points(started_wrong)) == 32


def test_a_model_without_position_embeddings_keeps_its_token_map(data):
    w = EmbeddingMap(tiny_llama(data.vocab_size), data.tokenizer)
    tokens = trace_points(w)
    w.which_box.value = "positions"
    assert "no learned position embeddings" in w.status.value
    assert w.which == "tokens" and w.which_box.value == "tokens" and trace_points(w) == tokens


def test_with_a_trainer_the_map_moves_as_it_learns(model, data):
    trainer = Trainer(model, data, TrainConfig(batch_size=8, max_steps=40, learning_rate=1e-2,
                                               eval_interval=40, device="cpu"))
    w = EmbeddingMap(trainer=trainer, every=20)
    first = w.projection.coords.clone()
    assert "step 0" in w.figure.layout.title.text
    trainer.run()
    assert "step 40" in w.figure.layout.title.text
    now = interpret.embedding_projection(model, data.tokenizer)
    assert torch.allclose(w.projection.coords, now.coords) and not torch.allclose(now.coords, first, atol=1e-3)
    points = {label: (x, y) for t in w.figure.data for label, x, y in zip(t.text, t.x, t.y)}
    assert points["e"] == pytest.approx(now.coords[now.labels.index("e")].tolist(), abs=1e-6)


def test_a_failing_refresh_never_stops_training(model, data, monkeypatch):
    trainer = Trainer(model, data, TrainConfig(batch_size=8, max_steps=10, eval_interval=10, device="cpu"))
    w = EmbeddingMap(trainer=trainer, every=5)

    def broken(*args, **kwargs):
        raise RuntimeError("the map broke")

    monkeypatch.setattr(interpret, "embedding_projection", broken)
    trainer.run()
    assert trainer.step_count == 10 and "the map broke" in w.status.value


def test_to_html_is_the_figure_with_plotly_inlined(model, data, tmp_path):
    w = EmbeddingMap(model, data.tokenizer)
    snippet = w.to_html()
    assert not snippet.lstrip().lower().startswith("<!doctype") and "Plotly.newPlot" in snippet
    assert "PC1 (" in snippet and len(snippet) > 1_000_000  # plotly.js itself is inside
    page = tmp_path / "map.html"
    again = w.to_html(page)
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and again in text and text.endswith("</body></html>")
