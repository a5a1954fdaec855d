"""Progress off a terminal (a log, a pipe, CI): a line per tenth of a step, not one per bar redraw."""

from __future__ import annotations

import io
import re

from client.progress import LINES_PER_BAR, StepLines, progress_bar


def _lines(text: str) -> list[str]:
    """Every line a log would show: tqdm redraws with a carriage return, each one a line in a file."""
    return [line for line in re.split(r"[\r\n]", text) if line.strip()]


def test_a_bar_written_to_a_file_prints_at_most_a_line_per_tenth():
    out = io.StringIO()
    bar = progress_bar(total=1000, desc="work", unit="item", file=out)
    assert isinstance(bar, StepLines)  # a StringIO is not a terminal
    for _ in range(1000):
        bar.update(1)
    bar.close()
    lines = _lines(out.getvalue())
    assert len(lines) == LINES_PER_BAR == 11
    assert [int(re.search(r"(\d+) %", line).group(1)) for line in lines] == list(range(0, 101, 10))
    assert lines[-1].startswith("work: 100 % (1000/1000 item)")


def test_iterating_a_short_or_unsized_step_prints_few_lines_and_messages_pass_through():
    out = io.StringIO()
    assert list(progress_bar(range(3), desc="three", file=out)) == [0, 1, 2]
    assert len(_lines(out.getvalue())) == 4  # 0 %, 33 %, 66 %, 100 %: one line per tenth reached
    out = io.StringIO()
    with progress_bar(total=None, desc="open", file=out) as bar:
        for _ in range(500):
            bar.update(1)
        bar.write("error: x.wav: unreadable")
    first, message, last = _lines(out.getvalue())  # unknown total: a line at the start and one at the end
    assert first.startswith("open: 0 it") and message == "error: x.wav: unreadable" and last.startswith("open: 500 it")
    out = io.StringIO()
    with progress_bar(total=10, file=out, disable=True) as bar:
        bar.update(10)
    assert out.getvalue() == ""


def test_a_real_step_with_stderr_not_a_terminal_prints_at_most_eleven_lines(tmp_path, capfd):
    from training.synth import synthesize_corpus

    synthesize_corpus(tmp_path / "corpus", layout="ravdess", actors=1, progress=True)  # 60 clips, a few seconds
    err = capfd.readouterr().err
    lines = _lines(err)
    assert 2 <= len(lines) <= LINES_PER_BAR, err[-2000:]
    assert lines[-1].startswith("synth: 100 % (60/60 clip)")


def test_the_training_steps_progress_prints_a_line_per_tenth_and_the_log_lines(capfd):
    from transformers import TrainerState, TrainingArguments

    from training.callbacks import StepProgressCallback

    state = TrainerState(max_steps=400, global_step=0, is_world_process_zero=True)
    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
    cb = StepProgressCallback()
    cb.on_train_begin(args, state, None)
    for step in range(1, 401):
        state.global_step = step
        cb.on_step_end(args, state, None)
        if step % 40 == 0:
            cb.on_log(args, state, None, logs={"loss": 1.0 / step, "total_flos": 1e9})
    cb.on_train_end(args, state, None)
    lines = _lines(capfd.readouterr().err)
    progress = [line for line in lines if line.startswith("train: ")]
    logs = [line for line in lines if line.startswith("{")]
    assert len(progress) == LINES_PER_BAR and progress[-1].startswith("train: 100 % (400/400 step)")
    assert len(logs) == 10 and "total_flos" not in logs[0] and "'loss': '0.025'" in logs[0]


def test_a_log_says_which_sub_step_a_long_step_is_in_when_it_changes_once_each():
    out = io.StringIO()
    bar = progress_bar(total=5, desc="export ckpt", unit="step", file=out)
    bar.set_postfix_str("fp32: torch.onnx.export")
    bar.update()
    bar.set_postfix_str("int8: dynamic-int8-convmatmul, agreement with fp32")  # a long one: the log must say so now
    bar.set_postfix_str("int8: dynamic-int8-convmatmul, agreement with fp32")  # unchanged: no new line
    lines = _lines(out.getvalue())
    assert len(lines) == 4, lines
    assert lines[1].startswith("export ckpt:   0 % (0/5 step)") and lines[1].endswith(", fp32: torch.onnx.export")
    assert lines[2].startswith("export ckpt:  20 % (1/5 step)") and not lines[2].endswith("torch.onnx.export")
    assert lines[3].startswith("export ckpt:  20 % (1/5 step)") and lines[3].endswith("agreement with fp32")
