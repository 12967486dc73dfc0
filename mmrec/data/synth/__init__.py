"""The embedded default dataset: a synthetic shop whose content genuinely predicts behaviour.

`mmrec data synth --out DIR` calls `mmrec.data.synth.generate.generate_synthetic`. It writes a
complete dataset folder (interactions, items with real image / audio / video files and text, users, `dataset.yaml`) so
the whole platform can be demonstrated and tested offline, in seconds, without any licence.

Why synthetic, and why planted: a recommender demo on random data proves nothing, because no
model can beat popularity there. Here every item has latent attributes (category, colour, shape,
pattern, style, pitch, timbre, tempo, motion), each rendered into one or more modalities, and every
user has planted preferences over those attributes. Interactions are sampled from a softmax over
user-item affinity + item popularity, so a model that reads the content can learn the
preferences and beat popularity, while popularity still beats random. Attributes are correlated
across modalities (the category drives the typical colour, pitch and price; the style drives
the timbre) but not identical, so each modality carries a signal of its own.

Everything is deterministic in the seed: the same seed gives byte-identical CSV, PNG and WAV
files (MP4 containers decode to identical frames). Each item's media come from their own
random stream (seed, modality, item index), so changing one size never reshuffles the rest.

The ground truth (latent attributes and user preferences) is saved in `ground_truth.json` for
tests and teaching; models must not read it.

Modules: `attributes` (vocabularies, correlations, constants), `sampling` (items, users,
interactions), `text`, `rendering` (images, audio, video frames in memory), `media` (the media
files), `files` (CSV tables, dataset.yaml, README, ground truth) and `generate` (the whole folder).
"""
