/*
 * glyph.h: the text a prompt asks to be drawn, as diffusers'
 * HunyuanImage pipeline finds it (extract_glyph_text): every quoted span, in
 * the order of four non-greedy Python regexes run one after the other,
 * 'single', "double", ‘chinese single’, “chinese double” (re.findall with
 * r"\'(.*?)\'" and so on; '.' does not cross a newline), formatted as
 *     Text "A". Text "B". 
 * for the ByT5 glyph encoder. Not a tokenizer: t5.h turns this into ids.
 */
#ifndef SDC_GLYPH_H
#define SDC_GLYPH_H

#include <stddef.h>

#include "../common/status.h"

/* prompt[0..len) (may hold NUL bytes; invalid UTF-8 is first replaced as
 * bytes.decode("utf-8", "replace") would). *out: malloc'd, NUL-terminated
 * glyph text (*out_len excludes the terminator), or NULL with *out_len 0
 * when the prompt quotes nothing. Linear time in len. */
sdc_status_t sdc_glyph_extract(const char *prompt, size_t len, char **out, size_t *out_len,
                               sdc_error_t *err);

#endif
