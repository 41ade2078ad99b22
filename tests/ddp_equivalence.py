"""Worker of tests/test_scale.py: train the toy Transformer 12 steps on fixed batches, with one
process (each batch whole) or two gloo ranks under Lightning's DDP (rank r takes rows of each
batch: an unequal cut, 40% / 60%). Writes OUT/result.json on rank 0: the logged loss of every
step, the tokens each rank saw in step 1, and the first 2,000 weights before and after.

    python tests/ddp_equivalence.py WORLD_SIZE OUT
"""

import json
import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nmt.config import load_config  # noqa: E402
from nmt.data import BatchView, TokenBatchSampler, column_lengths, encode_and_clean, load_raw  # noqa: E402
from nmt.tokenizer import PAD_ID, train_tokenizer  # noqa: E402
from nmt.training.module import TranslationModule  # noqa: E402

STEPS = 12


class Record(L.Callback):
    def __init__(self) -> None:
        self.losses, self.tokens = [], None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(trainer.callback_metrics["loss"]))
        if self.tokens is None:
            mine = torch.tensor([float((batch["tgt_out"] != PAD_ID).sum())])
            if trainer.world_size > 1:
                gathered = [torch.zeros(1) for _ in range(trainer.world_size)]
                torch.distributed.all_gather(gathered, mine)
                self.tokens = [float(t) for t in gathered]
            else:
                self.tokens = [float(mine)]


def weights(module: TranslationModule) -> list[float]:
    return torch.cat([p.detach().flatten() for p in module.model.parameters()])[:2000].tolist()


def main() -> None:
    world, out = int(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)
    cfg = load_config(ROOT / "configs" / "toy_reverse.yaml", ["data.limit_train=600", "tokenizer.vocab_size=20"])
    assert cfg.model.dropout == 0 and cfg.model.attention_dropout == 0
    raw = load_raw(cfg.data, "train")
    tokenizer = train_tokenizer(raw["src"], raw["tgt"], cfg.tokenizer)
    ds, _ = encode_and_clean(raw, tokenizer, cfg.data)
    whole = list(TokenBatchSampler(column_lengths(ds, "src_ids"), column_lengths(ds, "tgt_ids"), max_tokens=300,
                                   seed=3))[:STEPS]
    L.seed_everything(1, verbose=False)
    module = TranslationModule(cfg=cfg, tokenizer=tokenizer)
    initial = weights(module)
    record = Record()
    trainer = L.Trainer(accelerator="cpu", devices=world, strategy="ddp" if world > 1 else "auto", max_steps=STEPS,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                        limit_val_batches=0, use_distributed_sampler=False, enable_model_summary=False,
                        callbacks=[record])

    class Rows(L.LightningDataModule):  # the rank is known only once the processes have started
        def train_dataloader(self):
            rank = trainer.global_rank
            cut = [int(len(b) * 0.4) for b in whole]  # rank 0: the first 40% of each batch's rows
            parts = whole if world == 1 else [b[:c] if rank == 0 else b[c:] for b, c in zip(whole, cut)]
            return DataLoader(BatchView(ds), batch_size=None, sampler=parts)

    trainer.fit(module, datamodule=Rows())
    if trainer.global_rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps({
            "world_size": trainer.world_size, "losses": record.losses, "tokens_per_rank": record.tokens,
            "initial_weights": initial, "weights": weights(module)}))


if __name__ == "__main__":
    main()
