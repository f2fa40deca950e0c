"""Fine-tuning an encoder on (question, passage) pairs, on Ray Train, as a reusable artifact.

By concern:

* ``settings``: :class:`TrainSettings` (the config's ``TrainConfig``, a ``trainings`` entry): validated, which fields key the result;
* ``pairs``: training pairs from a generator's output or the held-out human questions, and the
  leak guard that keeps every evaluated question (and its translations) out of them;
* ``schedule``: which pair each worker trains on at each step, and the learning rate at a step;
* ``loss``: the contrastive loss over in-batch (and hard) negatives, on one worker or across workers;
* ``step``: :class:`ContrastiveStep`, one optimiser step of the encoder, and its checkpoint files;
* ``trainer``: the Ray Train ``TorchTrainer`` that runs the steps, checkpoints and resumes;
* ``artifact``: the trained encoder under the run's output directory, keyed, sealed, verified on load;
* ``run``: train once per key (reuse the artifact, or train and write it): what the ``train`` stage
  (``stages/train.py``) calls.

Nothing here imports Ray or torch at module level except ``trainer`` and ``step``.
"""
