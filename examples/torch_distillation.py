"""Knowledge distillation on synthetic logits with divest.torch.

A student (a linear map of the inputs) learns a teacher's softened class distribution:
with a KL, a JS or an f-divergence loss from logits (temperature T), and with a SinKD-style
batched Sinkhorn loss, where each sample's teacher and student distributions are compared
by entropic optimal transport under a cost between classes (here: distances between class
embeddings), solved for the whole batch at once by ``sinkhorn_batch``.
Runs in seconds on the CPU: python examples/torch_distillation.py
"""

import torch

import divest.torch as dt

N, D, K, T = 256, 20, 10, 2.0


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    w = torch.randn(D, K, generator=g, dtype=torch.float64)
    teacher = x @ w + 0.1 * torch.randn(N, K, generator=g, dtype=torch.float64)
    emb = torch.randn(K, 2, generator=g, dtype=torch.float64)  # class embeddings
    cost = torch.cdist(emb, emb) ** 2
    return x, teacher, cost / cost.max()


def fit(loss_name, x, teacher, cost, steps=60):
    torch.manual_seed(1)
    student = torch.nn.Linear(D, K).double()
    opt = torch.optim.Adam(student.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        s = student(x)
        if loss_name == "kl":
            loss = dt.kl(teacher, s, from_logits=True, temperature=T, reduction="batchmean")
        elif loss_name == "js":
            loss = dt.js(teacher, s, from_logits=True, temperature=T, reduction="batchmean")
        elif loss_name == "hellinger²":
            loss = dt.f_divergence(
                teacher, s, "hellinger", from_logits=True, temperature=T, reduction="batchmean"
            )
        else:  # SinKD-style: KL plus batched entropic OT between the softened distributions
            p = torch.softmax(teacher / T, -1)
            q = torch.softmax(s / T, -1)
            ot = dt.sinkhorn_batch(p, q, cost, 0.1, max_iter=1000, tol=1e-5).cost.mean()
            loss = dt.kl(teacher, s, from_logits=True, temperature=T, reduction="batchmean") + ot
        (T * T * loss).backward()
        opt.step()
    with torch.no_grad():
        s = student(x)
        agree = (s.argmax(1) == teacher.argmax(1)).double().mean().item()
        kl = dt.kl(teacher, s, from_logits=True, temperature=T, reduction="batchmean").item()
    return agree, kl


def main():
    x, teacher, cost = data()
    for name in ["kl", "js", "hellinger²", "kl+sinkhorn"]:
        agree, kl = fit(name, x, teacher, cost)
        print(f"{name:11s}: top-1 agreement with the teacher {agree:.3f}, KL(T) {kl:.4f}")


if __name__ == "__main__":
    main()
