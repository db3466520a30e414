/* amx.h -- the AMX tile configuration the bf16 GEMM and its peak loop share:
 * palette 1, tiles tmm0-7 each 16 rows x 64 bytes.  For files built with
 * -mamx-tile (gemm_bf16_amx.c, runtime/peak_amx.c); load it in each thread
 * before its first tile instruction, _tile_release() after the last. */
#ifndef PT_GEMM_AMX_H
#define PT_GEMM_AMX_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

static inline void pt_amx_configure(void) {
    struct {
        uint8_t palette, start_row, reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
}

#endif
