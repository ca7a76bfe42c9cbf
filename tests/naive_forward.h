/* naive_forward.h — an independent forward of MODEL.md in double precision, straight from the
 * tensors of a bound model folder: the oracle the engine suites compare the backends with. */
#ifndef QE_TEST_NAIVE_FORWARD_H
#define QE_TEST_NAIVE_FORWARD_H
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "weights/model.h"

static double *tensor_d(const st_tensor *t) {
    size_t n = st_elems(t);
    float *f = malloc(sizeof(float) * n);
    double *d = malloc(sizeof(double) * n);
    st_to_f32(t, f);
    for (size_t i = 0; i < n; i++)
        d[i] = f[i];
    free(f);
    return d;
}

static void rms(double *x, const double *w, int n, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double inv = 1 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        x[i] = x[i] * inv * w[i];
}

/* y[o] = sum_i W[o, i] x[i] */
static void lin(const double *W, const double *x, int out, int in, double *y) {
    for (int o = 0; o < out; o++) {
        double s = 0;
        for (int i = 0; i < in; i++)
            s += W[(size_t)o * in + i] * x[i];
        y[o] = s;
    }
}

/* The forward of MODEL.md for one sequence of T tokens at positions 0..T-1. An ALiBi model
 * (c->alibi) skips the rotation and adds slope[h] * (j - t) to the logit of query t, key j. */
static void naive_embed(const qe_model *m, const int32_t *ids, int T, double *out) {
    const qe_config *c = &m->cfg;
    const int H = c->hidden_size, hd = c->head_dim, nh = c->num_heads, nk = c->num_kv_heads;
    const int F = c->intermediate_size;
    double *x = calloc((size_t)T * H, sizeof(double)), *h = malloc(sizeof(double) * H);
    double *q = malloc(sizeof(double) * (size_t)T * nh * hd);
    double *k = malloc(sizeof(double) * (size_t)T * nk * hd),
           *v = malloc(sizeof(double) * (size_t)T * nk * hd);
    double *a = malloc(sizeof(double) * (size_t)nh * hd), *p = malloc(sizeof(double) * T);
    double *g = malloc(sizeof(double) * F), *u = malloc(sizeof(double) * F),
           *y = malloc(sizeof(double) * H);
    float *slopes = malloc(sizeof(float) * (size_t)nh);
    cfg_alibi_slopes(nh, slopes);
    double *E = tensor_d(m->embed);
    for (int t = 0; t < T; t++)
        memcpy(x + (size_t)t * H, E + (size_t)ids[t] * H, sizeof(double) * H);
    free(E);
    for (int l = 0; l < c->num_layers; l++) {
        const qe_layer_tensors *L = &m->layers[l];
        double *wn = tensor_d(L->attn_norm), *wq = tensor_d(L->wq), *wk = tensor_d(L->wk);
        double *wv = tensor_d(L->wv), *qn = tensor_d(L->q_norm), *kn = tensor_d(L->k_norm);
        double *wo = tensor_d(L->wo), *mn = tensor_d(L->mlp_norm), *wg = tensor_d(L->w_gate);
        double *wu = tensor_d(L->w_up), *wd = tensor_d(L->w_down);
        for (int t = 0; t < T; t++) {
            memcpy(h, x + (size_t)t * H, sizeof(double) * H);
            rms(h, wn, H, c->rms_norm_eps);
            lin(wq, h, nh * hd, H, q + (size_t)t * nh * hd);
            lin(wk, h, nk * hd, H, k + (size_t)t * nk * hd);
            lin(wv, h, nk * hd, H, v + (size_t)t * nk * hd);
            for (int j = 0; j < nh + nk; j++) {
                double *vec =
                    j < nh ? q + ((size_t)t * nh + j) * hd : k + ((size_t)t * nk + j - nh) * hd;
                rms(vec, j < nh ? qn : kn, hd, c->rms_norm_eps);
                for (int i = 0; i < hd / 2 && !c->alibi; i++) {
                    double ang = t * pow(c->rope_theta, -2.0 * i / hd), x0 = vec[i],
                           x1 = vec[i + hd / 2];
                    vec[i] = x0 * cos(ang) - x1 * sin(ang);
                    vec[i + hd / 2] = x1 * cos(ang) + x0 * sin(ang);
                }
            }
        }
        for (int t = 0; t < T; t++) {
            for (int hh = 0; hh < nh; hh++) {
                int kh = hh / (nh / nk);
                double mx = -1e300, sum = 0;
                for (int j = 0; j <= t; j++) {
                    double s = 0;
                    for (int d = 0; d < hd; d++)
                        s += q[((size_t)t * nh + hh) * hd + d] * k[((size_t)j * nk + kh) * hd + d];
                    p[j] = s / sqrt(hd) + (c->alibi ? slopes[hh] * (double)(j - t) : 0.0);
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j <= t; j++)
                    sum += (p[j] = exp(p[j] - mx));
                for (int d = 0; d < hd; d++) {
                    double s = 0;
                    for (int j = 0; j <= t; j++)
                        s += p[j] * v[((size_t)j * nk + kh) * hd + d];
                    a[hh * hd + d] = s / sum;
                }
            }
            lin(wo, a, H, nh * hd, y);
            for (int i = 0; i < H; i++)
                x[(size_t)t * H + i] += y[i];
        }
        for (int t = 0; t < T; t++) {
            memcpy(h, x + (size_t)t * H, sizeof(double) * H);
            rms(h, mn, H, c->rms_norm_eps);
            lin(wg, h, F, H, g);
            lin(wu, h, F, H, u);
            for (int i = 0; i < F; i++)
                g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            lin(wd, g, H, F, y);
            for (int i = 0; i < H; i++)
                x[(size_t)t * H + i] += y[i];
        }
        double *all[] = {wn, wq, wk, wv, qn, kn, wo, mn, wg, wu, wd};
        for (int i = 0; i < 11; i++)
            free(all[i]);
    }
    double *fn = tensor_d(m->final_norm);
    memcpy(out, x + (size_t)(T - 1) * H, sizeof(double) * H);
    rms(out, fn, H, c->rms_norm_eps);
    free(fn);
    double *bufs[] = {x, h, q, k, v, a, p, g, u, y};
    for (int i = 0; i < 10; i++)
        free(bufs[i]);
    free(slopes);
}

#endif
