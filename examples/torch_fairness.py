"""Fairness penalty with JdCov / CCdCov (divest.torch).

A small regression model is trained on synthetic data where the target leaks two
protected attributes (one continuous, one binary). Adding a penalty λ·CCdCov²(ŷ, [a1, a2])
(or JdCov²(ŷ, a1, a2)) to the squared error makes the predictions less dependent on the
attributes; the dependence (distance correlation with the attributes) is printed before
and after. Runs in a few seconds on the CPU: python examples/torch_fairness.py
"""

import torch

import divest.torch as dt


def make_data(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    a1 = torch.randn(n, 1, generator=g, dtype=torch.float64)  # continuous attribute
    a2 = (torch.rand(n, 1, generator=g, dtype=torch.float64) < 0.5).double()  # binary
    z = torch.randn(n, 3, generator=g, dtype=torch.float64)  # legitimate features
    # Features carry the attributes; the target depends on both.
    x = torch.cat([z, a1 + 0.3 * z[:, :1], a2 + 0.2 * z[:, 1:2]], dim=1)
    y = z @ torch.tensor([[1.0], [-0.5], [0.3]], dtype=torch.float64) + 0.8 * a1 + 0.8 * a2
    return x, y, a1, a2


def train(penalty, lam, x, y, a1, a2, steps=100):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
    ).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        pred = model(x)
        loss = torch.mean((pred - y) ** 2)
        if penalty == "ccdcov":
            loss = loss + lam * dt.ccdcov(pred, a1, a2)
        elif penalty == "jdcov":
            loss = loss + lam * dt.jdcov(pred, a1, a2, c=0.5)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model(x)
        mse = torch.mean((pred - y) ** 2).item()
        dep = dt.dcor(pred, torch.cat([a1, a2], 1)).item()
    return mse, dep


def main():
    x, y, a1, a2 = make_data()
    print("dcor(y, attributes) in the data:", round(dt.dcor(y, torch.cat([a1, a2], 1)).item(), 3))
    for penalty, lam in [("none", 0.0), ("ccdcov", 5.0), ("jdcov", 5.0)]:
        mse, dep = train(penalty, lam, x, y, a1, a2)
        print(f"{penalty:7s} λ={lam:3.1f}: MSE {mse:.3f}, dcor(ŷ, attributes) {dep:.3f}")


if __name__ == "__main__":
    main()
