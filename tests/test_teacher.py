import pytest
import torch

from sdft_core.teacher import Teacher


def make_student(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)).to(dtype)


def test_ema_update_follows_the_formula():
    student = make_student()
    teacher = Teacher(student, "ema", ema_alpha=0.1)
    before = [p.detach().clone() for p in teacher.model.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(student)
    for phi_old, phi, theta in zip(before, teacher.model.parameters(), student.parameters()):
        torch.testing.assert_close(phi, 0.1 * theta + 0.9 * phi_old)


def test_ema_teacher_is_a_float32_shadow_of_a_bf16_student():
    student = make_student(torch.bfloat16)
    teacher = Teacher(student, "ema", ema_alpha=0.01)
    assert all(p.dtype == torch.float32 for p in teacher.model.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.5)
    teacher.update(student)
    # An update of 0.01 * 0.5 = 0.005 is below bf16 resolution near 1 but kept in the float32 shadow.
    moved = [(phi - theta.float() + 0.5).abs().max() for phi, theta in zip(teacher.model.parameters(),
                                                                            student.parameters())]
    assert all(m > 0 for m in moved)


def test_frozen_teacher_never_moves_and_live_teacher_is_the_student():
    student = make_student()
    frozen = Teacher(student, "frozen")
    live = Teacher(student, "live")
    before = [p.detach().clone() for p in frozen.model.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    frozen.update(student)
    live.update(student)
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.model.parameters()))
    assert live.model is student


def test_bad_teacher_settings_are_refused():
    with pytest.raises(ValueError, match="teacher kind"):
        Teacher(make_student(), "ensemble")
    with pytest.raises(ValueError, match="ema_alpha"):
        Teacher(make_student(), "ema", ema_alpha=0.0)
