"""`XLSTMForecaster`: the scikit-learn style fit/predict API over long pandas frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from xlstm_ts import covariates as cov
from xlstm_ts import training_utils as tu
from xlstm_ts.backtest import cross_validation, score
from xlstm_ts.config import ModelConfig
from xlstm_ts.datasets.frame import Panel
from xlstm_ts.datasets.windows import Covariates, WindowSampler, context_windows, tail_windows
from xlstm_ts.distributed import fit_trainer
from xlstm_ts.inference import forecast_frame, predict_array, predict_series, stack_variates, variate_panel
from xlstm_ts.lightning_module import LitForecaster
from xlstm_ts.model import XLSTMForecastNet
from xlstm_ts.persistence import load_forecaster, save_forecaster
from xlstm_ts.point_head import calibrate_spread


class XLSTMForecaster(BaseEstimator):
    """Probabilistic xLSTM forecaster for panels of univariate series with covariates, with a scikit-learn style API.

    Args:
        prediction_length: F, number of future steps to forecast.
        context_length: L, number of past steps the model sees. Default: 4 * prediction_length.
        quantiles: Quantile levels reported by `predict`, each in (0, 1).
        head: "quantile" (pinball loss on the levels plus the median; `mean` is the median), "normal" or
            "student_t" (likelihood; `mean` is the distribution mean, quantiles come from the distribution), or
            "negative_binomial" for non-negative counts (mean scaling, likelihood in data units), or "mse" (the
            squared error; `mean` is the mean forecast that MSE rewards, quantiles are Gaussian with the spread of the
            validation residuals, or of the training residuals without `val_size`).
        model: A ModelConfig, a dict of its fields, a preset name from configs/model/ ("tiny", "small", "base",
            "mlstm_only") or a YAML path. Default: "small". Its `mode` chooses between channel-independent
            forecasting and 'variate_mixing', where the series of the frame are the variates of one multivariate
            series (a shared time index is required) and inform each other's forecasts.
        max_steps: Optimizer steps.
        batch_size: Windows per step.
        learning_rate: Peak AdamW learning rate (linear warm-up, cosine decay).
        weight_decay: AdamW weight decay on matrices.
        gradient_clip_val: Gradient norm clip (None disables).
        random_state: Seed for weights, window sampling and dropout; the same seed gives identical forecasts on CPU.
        id_col, time_col, target_col: Column names of the long frame.
        freq: Frequency of the series (pandas alias or integer step). Default: inferred in `fit`.
        val_size: Steps at the end of each series held out for validation (0: none). Training targets stop before
            them; every window with its target in the tail is scored every `val_check_steps` steps, and the
            weights with the lowest validation loss are restored at the end of `fit`.
        val_check_steps: Training steps between validations.
        early_stopping_patience: Stop after this many validations without improvement (None: never stop early).
        verbose: False: silent. True: Lightning's progress bar in a terminal or notebook (a line every tenth of the
            steps elsewhere), its messages, and a CSV log in ./lightning_logs/version_N/ unless `log_dir` is set.
        trainer_kwargs: Extra keyword arguments for `lightning.Trainer` (e.g. {"accelerator": "gpu"}, or a
            "logger" of your choice; see `xlstm_ts.training_utils`). {"devices": N, "strategy": "ddp"} trains on
            N processes or GPUs, each drawing `batch_size` windows per step; see `xlstm_ts.distributed`. A network
            fitted on one GPU stays there for `predict` (multi-process fits leave it on the CPU).
        past_covariates: Columns of the frame known only up to each series' end; NaN marks a missing value.
        future_covariates: Columns known over the context and the horizon (calendar, planned promotions, weather
            forecasts); `predict` takes their horizon values from `futr_df` (see `make_future_frame`).
        static_covariates: One value per series, from `static_df` or from columns constant within each series;
            numeric, or one-hot encoded when not. See `xlstm_ts.covariates` (frames, checks, scaling) and
            `xlstm_ts.covariate_layers` (how they enter the network).
        log_dir: Folder for a CSV log of each fit (train_loss, val_loss, learning rate in version_N/metrics.csv).
        float32_matmul_precision: With CUDA, `torch.set_float32_matmul_precision` during fit and predict (restored
            after): "high" lets fp32 matmuls and the Triton kernels' dots use TF32 tensor cores (a training step about
            6x faster on an H100 than exact fp32; gates, states and sums stay fp32), "highest" keeps exact fp32 dots,
            None leaves torch's setting as it is. Without CUDA it changes nothing.
        compile: torch.compile each xLSTM stack before training (`XLSTMStack.compile_blocks`; the Triton sequence
            kernels stay as they are): faster training steps after a one-off compile (seconds on a GPU, up to minutes
            on a CPU, which needs a C++ compiler). Single-device fits only. The first `predict` compiles its own graphs.
        cuda_graphs: On one CUDA device, capture the training loss's forward and backward as CUDA graphs on the
            first batch and replay them (`xlstm_ts.graphed_step.GraphedLoss`): far fewer kernel launches per step
            for small batches, the same arithmetic. The optimizer steps outside the graph.
        ema_decay: Keep an exponential moving average of the weights (avg = decay * avg + (1 - decay) * weights
            after every step, from the initial weights), validate it and forecast with it, e.g. 0.999 (an average over
            about the last 1000 steps). None (default): the weights as trained.

    Examples:
        >>> from xlstm_ts import XLSTMForecaster
        >>> from xlstm_ts.datasets import make_synthetic_panel
        >>> df = make_synthetic_panel(n_series=2, length=200)
        >>> f = XLSTMForecaster(prediction_length=12, context_length=48, model="tiny", max_steps=2).fit(df)
        >>> f.predict().shape
        (24, 6)
    """

    def __init__(self, prediction_length: int = 24, context_length: int | None = None,
                 quantiles: Sequence[float] = (0.1, 0.5, 0.9), head: str = "quantile",
                 model: ModelConfig | dict | str = "small",
                 max_steps: int = 200, batch_size: int = 64, learning_rate: float = 1e-3,
                 weight_decay: float = 1e-4, gradient_clip_val: float | None = 1.0, random_state: int | None = 0,
                 id_col: str = "unique_id", time_col: str = "ds", target_col: str = "y",
                 freq: str | int | None = None, val_size: int = 0, val_check_steps: int = 100,
                 early_stopping_patience: int | None = None, verbose: bool = False,
                 trainer_kwargs: dict | None = None, past_covariates: Sequence[str] | None = None,
                 future_covariates: Sequence[str] | None = None, static_covariates: Sequence[str] | None = None,
                 log_dir: str | Path | None = None, float32_matmul_precision: str | None = "high",
                 compile: bool = False, cuda_graphs: bool = False, ema_decay: float | None = None):
        self.prediction_length = prediction_length
        self.context_length = context_length
        self.quantiles = quantiles
        self.head = head
        self.model = model
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.gradient_clip_val = gradient_clip_val
        self.random_state = random_state
        self.id_col = id_col
        self.time_col = time_col
        self.target_col = target_col
        self.freq = freq
        self.val_size = val_size
        self.val_check_steps = val_check_steps
        self.early_stopping_patience = early_stopping_patience
        self.verbose = verbose
        self.trainer_kwargs = trainer_kwargs
        self.past_covariates = past_covariates
        self.future_covariates = future_covariates
        self.static_covariates = static_covariates
        self.log_dir = log_dir
        self.float32_matmul_precision = float32_matmul_precision
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self.ema_decay = ema_decay

    def fit(self, df: pd.DataFrame, static_df: pd.DataFrame | None = None) -> XLSTMForecaster:
        """Train on every series of the long frame `df` (columns id_col, time_col, target_col and the covariate
        columns); `static_df` holds static covariates, one row per series (id_col + the columns). Returns self."""
        horizon, context, levels, cfg = tu.check_params(self)
        panel, spec, covs = cov.fit_inputs(self, df, static_df, cfg.mode)
        if self.head == "negative_binomial":
            negative = [uid for uid, v in zip(panel.ids, panel.values) if np.nanmin(v) < 0]
            if negative:
                raise ValueError(f"head='negative_binomial' models counts, but target column {self.target_col!r} of "
                                 f"series {negative[0]!r} has negative values. Use head='normal' or 'student_t'.")
        seed = 0 if self.random_state is None else int(self.random_state)
        with tu.quiet(self.verbose), tu.matmul_precision(self.float32_matmul_precision):
            L.seed_everything(seed, verbose=False)
            net = XLSTMForecastNet(cfg, context, horizon, levels, head=self.head, n_past=len(spec.past),
                                   n_future=len(spec.future), n_static=spec.n_static)
            if covs is not None:
                static = None if covs.static is None else torch.from_numpy(covs.static)
                net.covariates.fit_scaling(torch.from_numpy(np.concatenate(covs.dynamic)), static)
            holdout = int(self.val_size)
            series = panel.values
            if cfg.mode == "variate_mixing":  # one multivariate series (S, C); a window holds every variate
                series = [stack_variates(panel.values, panel.ids, panel.starts)]
            sampler = WindowSampler(series, context, horizon, self.batch_size, seed=seed, holdout=holdout,
                                    covariates=covs)
            loader = torch.utils.data.DataLoader(sampler, batch_size=None, num_workers=0)
            module = LitForecaster(net, self.learning_rate, self.weight_decay, self.max_steps,
                                   cuda_graphs=self.cuda_graphs, ema_decay=self.ema_decay)
            trainer, best = tu.make_trainer(self, validate=holdout > 0)
            val_loader = tu.batch_loader(tail_windows(series, context, horizon, holdout, covariates=covs),
                                         tu.validation_batch_size(trainer)) if holdout else None
            device = tu.training_device(trainer, cuda=self.cuda_graphs)
            net.to(device)  # the start and the score of the initial weights are computed where training runs
            if device.type == "cuda":
                sampler.to(device)  # batches gathered on the GPU: no per-batch host work or copy
            if self.compile:
                tu.compile_network(net, trainer)
            self.linear_skip_ridge_, start_loss = tu.linear_start(net, sampler, val_loader, seed)
            if best is not None:
                best.seed(start_loss, net)
            fit_trainer(trainer, module, loader, val_loader, best)
            net.to(device).eval()  # Lightning hands the module back on the CPU; predict where it trained
            calibrate_spread(net, val_loader)  # the mse head's intervals: out-of-sample spread
        self.net_, self.config_, self.levels_ = net, cfg, levels
        self.context_length_, self.freq_, self.panel_ = context, panel.freq, panel
        self.train_loss_ = float(trainer.callback_metrics.get("train_loss", torch.tensor(float("nan"))))
        self.n_series_ = len(panel)
        self.best_val_loss_ = best.best_score if best is not None and best.best_step >= 0 else None
        self.best_step_ = best.best_step if best is not None and best.best_step >= 0 else None
        self.covariates_, self.static_features_ = spec, None if covs is None else covs.static
        self.log_dir_ = trainer.logger.log_dir if trainer.logger is not None else None
        return self

    def _inputs(self, df: pd.DataFrame | None, futr_df: pd.DataFrame | None,
                static_df: pd.DataFrame | None) -> tuple[Panel, Covariates | None]:
        """The context panel (fitted series or `df`, fitted variate order when mixing) and its covariates."""
        panel = self.panel_ if df is None else cov.read_panel(self, df, self.covariates_, self.freq_)
        panel = variate_panel(self, panel)
        return panel, cov.prediction_covariates(self, panel, df, futr_df, static_df)

    def sample(self, df: pd.DataFrame | None = None, num_samples: int = 100, random_state: int | None = None,
               futr_df: pd.DataFrame | None = None, static_df: pd.DataFrame | None = None) -> np.ndarray:
        """Sample paths of the next `prediction_length` steps, shape (series, num_samples, prediction_length).

        Series are in the order of `predict` (first appearance in `df`, or the fitted series); `futr_df` and
        `static_df` as in `predict`. Quantile heads sample by interpolating their quantile function; distribution
        heads sample their distribution. Steps are sampled independently. `random_state` seeds the draws (default:
        the forecaster's random_state).
        """
        check_is_fitted(self)
        if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
        panel, covs = self._inputs(df, futr_df, static_df)
        mixing = self.config_.mode == "variate_mixing"
        device = next(self.net_.parameters()).device
        seed = random_state if random_state is not None else (self.random_state or 0)
        generator = torch.Generator(device=device).manual_seed(int(seed))
        batch = context_windows([stack_variates(panel.values)] if mixing else panel.values, self.context_length_, covs)
        batch = {k: v.to(device) for k, v in batch.items()}
        paths = self.net_.sample(**batch, num_samples=int(num_samples),
                                 generator=generator)  # (N, num_samples, F), or (1, C, num_samples, F) when mixing
        return (paths[0] if mixing else paths).float().cpu().numpy()

    def make_future_frame(self, df: pd.DataFrame | None = None) -> pd.DataFrame:
        """The frame to fill for `predict(futr_df=...)`: id_col and time_col for the next `prediction_length` steps
        of every series of `df` (default: the fitted series), and one NaN column per future covariate."""
        check_is_fitted(self)
        panel = self.panel_ if df is None else cov.read_panel(self, df, cov.CovariateSpec(), self.freq_)
        return cov.make_future_frame(self, panel)

    def predict_gluonts(self, dataset) -> list:
        """Forecasts after each entry of a gluonts dataset as gluonts `QuantileForecast`s (extra `[gluonts]`)."""
        check_is_fitted(self)
        from xlstm_ts.datasets.gluonts_adapter import predict_gluonts

        return predict_gluonts(self, dataset)

    def cross_validation(self, df: pd.DataFrame, n_windows: int = 1, step_size: int | None = None,
                         refit: bool = False, static_df: pd.DataFrame | None = None) -> pd.DataFrame:
        """Rolling-origin backtest over the last `n_windows` windows of every series (see
        `xlstm_ts.backtest.cross_validation`): columns id, time, cutoff, mean, quantiles and the realized `y`.
        Covariates come from `df` (future ones over each window's horizon too) and `static_df`."""
        return cross_validation(self, df, n_windows, step_size, refit, static_df)

    def score(self, df: pd.DataFrame, static_df: pd.DataFrame | None = None) -> float:
        """Negative MASE (higher is better) of forecasts for the last `prediction_length` steps of each series
        in `df`, made from the steps before them without refitting (future covariates over those steps come from
        `df`). The MASE season comes from the frequency (hourly 24, daily 7, ...) and its scale from each series'
        history before the forecast window."""
        check_is_fitted(self)
        return score(self, df, static_df)

    def save(self, path: str | Path) -> Path:
        """Write the fitted forecaster to the directory `path`: settings (JSON), weights (weights-only torch file)
        and the last context window of each training series. `trainer_kwargs` are not saved."""
        check_is_fitted(self)
        return save_forecaster(self, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device | None = None) -> XLSTMForecaster:
        """A forecaster saved with `save`; `map_location` moves the network (e.g. "cpu", "cuda"). Loading reads
        tensors with `weights_only=True` and JSON, so it never runs pickled code."""
        return load_forecaster(cls, path, map_location)

    def predict_array(self, context: np.ndarray, batch_size: int = 1024) -> dict[str, np.ndarray]:
        """Forecast from raw context arrays.

        Args:
            context: (N, S) array; the last `context_length` steps of each row are used (NaN = missing; rows
                shorter than the context are left-padded as missing). In mode 'variate_mixing': (N, C, S), the
                C variates in fitted order.
            batch_size: windows per forward pass.

        Returns:
            {"mean": (N, F), "quantiles": (N, F, Q)} with Q the requested `quantiles` in sorted order; (N, C, F) and
            (N, C, F, Q) in mode 'variate_mixing'.
        """
        check_is_fitted(self)
        with tu.matmul_precision(self.float32_matmul_precision):
            return predict_array(self, context, batch_size)

    def _predict_series(self, series: list[np.ndarray], batch_size: int = 1024,
                        covariates: Covariates | None = None) -> dict[str, np.ndarray]:
        with tu.matmul_precision(self.float32_matmul_precision):
            return predict_series(self, series, batch_size, covariates)

    def predict(self, df: pd.DataFrame | None = None, futr_df: pd.DataFrame | None = None,
                static_df: pd.DataFrame | None = None) -> pd.DataFrame:
        """Forecast the `prediction_length` steps after the end of each series.

        Args:
            df: A long frame of context series (same or new ids) with the past and future covariate columns.
                Default: the series seen in `fit`.
            futr_df: Values of the future covariates over the horizon: id_col, time_col and one column per future
                covariate, one row for each of the next `prediction_length` steps of every series (fill the frame
                of `make_future_frame`). Required when the forecaster has future covariates.
            static_df: Static covariates, one row per series. Default: the columns of `df`, else the values of fit.

        Returns:
            Long frame with columns id_col, time_col, "mean" and one "q<level>" column per quantile level;
            `n_series * prediction_length` rows, series in input order (in mode 'variate_mixing': the fitted
            variate order), time ascending.
        """
        check_is_fitted(self)
        panel, covs = self._inputs(df, futr_df, static_df)
        out = self._predict_series(panel.values, covariates=covs)
        return forecast_frame(self, panel.ids, panel.ends, panel.freq, out)
