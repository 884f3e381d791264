"""A regulariser strategy: fine-tuning with L2-SP (Li et al., 2018).

Plain weight decay pulls the weights towards zero; L2-SP pulls them towards the
pretrained starting point instead, so a small dataset cannot drag the backbone far
from what it learnt. ``adapt`` runs on the freshly built (pretrained) backbone, so it
can keep a copy of the starting weights; the ``extra_loss`` it returns is added to
the cross-entropy of every training step, before fp16 loss scaling. The phase uses
two API 1.3 fields: a short warm-up and no weight decay (L2-SP replaces it). The
penalty reads only weights that train, which it declares (API 1.5), so the frozen
layers' outputs are still computed once and cached.
"""

import tlbench
from tlbench.types import Adapted, Phase, Strategy, frozen_groups

TLBENCH_PLUGIN_API = (1, 5)  # Adapted.extra_loss_reads_only_trainable


def suggest(space, options):
    return {
        "epochs": space.suggest("epochs", options["epochs"]),
        "freeze": space.suggest("freeze", options["freeze"]),
        "lr_backbone": space.suggest("lr_backbone", options["lr_backbone"], log=True),
        "lr_head": space.suggest("lr_head", options["lr_head"], log=True),
        "alpha": space.suggest("alpha", options["alpha"], log=True),
    }


def phases(params, n_groups):
    frozen = frozen_groups(params["freeze"], n_groups)
    return [
        Phase(
            "l2sp",
            params["epochs"],
            frozen,
            params["lr_backbone"],
            params["lr_head"],
            warmup_epochs=0.5,
            weight_decay=0.0,
        )
    ]


def adapt(built, params):
    head = set(built.head)
    start = {n: p.detach().clone() for n, p in built.model.named_parameters() if n not in head}
    alpha = params["alpha"]

    def l2sp(model, logits, targets):
        # alpha/2 * ||w - w0||^2 over the backbone weights that train in this phase
        total = logits.new_zeros(())
        for name, p in model.named_parameters():
            if p.requires_grad and name in start:
                if start[name].device != p.device:
                    start[name] = start[name].to(p.device)
                total = total + (p - start[name]).pow(2).sum()
        return 0.5 * alpha * total

    # it reads only the logits and the weights that train: the frozen layers' outputs may be cached (API 1.5)
    return Adapted(built=built, extra_loss=l2sp, extra_loss_reads_only_trainable=True)


@tlbench.hookimpl
def tlbench_strategies():
    yield Strategy(
        name="l2sp",
        options={
            "epochs": 3,
            "freeze": [0.0, 0.5],
            "lr_backbone": [1e-4, 1e-2],
            "lr_head": [1e-3, 1e-1],
            "alpha": [1e-4, 1e-1],
        },
        suggest=suggest,
        phases=phases,
        adapt=adapt,
        description="fine-tuning pulled towards the pretrained weights (L2-SP) instead of towards zero",
    )
