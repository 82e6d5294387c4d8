/*
 * sdc-eval-demo: scores images of the demo model (models/sdc-demo) against
 * the attributes their prompts asked for: background colour, the colour and
 * shape in each named slot, and empty slots left empty. A fixed geometric
 * check, no learned model: the scenes are flat colours in three known slots
 * (tools/train_demo/shapes.py draws them; the geometry here must match).
 *
 *   sdc-eval-demo --prompts FILE --images DIR [--min-accuracy PCT]
 *
 * Not a general image metric: it knows only the demo's 64 x 64 world
 * (other sizes are read in the same proportions).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "common/image.h"

#define PROG "sdc-eval-demo"
#define EXIT_USAGE 2
#define LINE_MAX_BYTES 4096
#define MAX_PROMPTS 10000
#define MAX_IMAGE_PIXELS ((size_t)4096 * 4096)

/* The demo's geometry at 64 x 64 (shapes.py: SLOT_X, SLOT_Y, RADIUS). */
#define REF_SIZE 64
#define SLOT_Y 32
#define BOX_HALF 8     /* the shape's bounding box: centre +- 8 px */
#define CORNER 3       /* corner patches of that box, 3 x 3 px */
#define BG_PATCH 6     /* background: the image's four 6 x 6 corners */

enum { N_SLOTS = 3, N_COLOURS = 8, N_SHAPES = 4 };

static const char *const slot_names[N_SLOTS] = {"left", "center", "right"};
static const int slot_x[N_SLOTS] = {12, 32, 52};

typedef struct {
    const char *name;
    double rgb[3];
} colour_t;

static const colour_t palette[N_COLOURS] = {
    {"red", {220, 30, 30}},     {"orange", {250, 140, 0}}, {"yellow", {250, 220, 0}},
    {"green", {30, 160, 50}},   {"blue", {30, 70, 220}},   {"purple", {140, 50, 190}},
    {"white", {240, 240, 240}}, {"black", {20, 20, 20}},
};

/* A shape's signature: the fraction of its bounding box it fills, and of the
 * box's top and bottom corners, measured on the training renderer's images.
 * A square fills its box, corners and all; a triangle (apex up) its bottom
 * corners; a circle and a star neither, the star far less of the box. */
typedef struct {
    const char *name;
    double fill, top, bottom;
} shape_t;

static const shape_t shapes[N_SHAPES] = {
    {"circle", 0.796, 0.056, 0.111},
    {"square", 1.000, 1.000, 1.000},
    {"triangle", 0.502, 0.000, 0.778},
    {"star", 0.304, 0.000, 0.000},
};

typedef struct {
    char id[64];
    int zh; /* 0: English, 1: Chinese */
    int background;
    int colour[N_SLOTS]; /* -1: slot empty */
    int shape[N_SLOTS];
} prompt_t;

/* Attribute tallies, per language (0 en, 1 zh). */
enum { A_BACKGROUND, A_COLOUR, A_SHAPE, A_EMPTY, A_FULL, N_ATTRS };
static const char *const attr_names[N_ATTRS] = {"background", "colour", "shape", "empty slot",
                                                "fully correct"};

typedef struct {
    int ok[N_ATTRS][2];
    int total[N_ATTRS][2];
} tally_t;

typedef struct {
    const uint8_t *rgb;
    int w, h;
} image_t;

static void usage(FILE *f)
{
    fprintf(f,
"usage: sdc-eval-demo --prompts FILE --images DIR [--min-accuracy PCT] [--quiet]\n"
"\n"
"Checks images made by the demo model from a list of prompts with known\n"
"attributes, and prints one verdict line per prompt and the accuracy per\n"
"attribute and per language.\n"
"\n"
"  -p, --prompts FILE      tab-separated lines: id, language (en or zh),\n"
"                          background colour, objects, prompt; objects are\n"
"                          slot:colour:shape separated by commas, e.g.\n"
"                          left:red:circle,right:blue:star. Lines starting\n"
"                          with '#' and empty lines are skipped\n"
"  -i, --images DIR        the images, DIR/ID.png for each prompt id\n"
"  -m, --min-accuracy PCT  exit 1 when fewer than PCT percent of the prompts\n"
"                          are fully correct (default 0)\n"
"  -q, --quiet             only the summary, no line per prompt\n"
"  -h, --help              this text\n"
"\n"
"Slots: left, center, right. Colours: red, orange, yellow, green, blue,\n"
"purple, white, black. Shapes: circle, square, triangle, star.\n"
"\n"
"The checks, on the image scaled to 64 x 64 coordinates: the background is\n"
"the palette colour nearest to the mean of the four 6 x 6 corners; a\n"
"shape's colour is the palette colour nearest to the mean of a 5 x 5 patch\n"
"at its slot's centre; its shape is the nearest signature (fraction of its\n"
"17 x 17 box, of the box's top and of its bottom corners, whose pixels are\n"
"nearer the shape's colour than the background's); an empty slot's centre\n"
"must have the colour found for the background. A prompt is fully correct\n"
"when all hold.\n"
"\n"
"Exit status: 0 done, 1 an unreadable file or image, a bad line, or\n"
"accuracy under --min-accuracy, 2 usage error.\n");
}

static int colour_index(const char *s)
{
    for (int i = 0; i < N_COLOURS; i++)
        if (strcmp(s, palette[i].name) == 0) return i;
    return -1;
}

static int shape_index(const char *s)
{
    for (int i = 0; i < N_SHAPES; i++)
        if (strcmp(s, shapes[i].name) == 0) return i;
    return -1;
}

static int slot_index(const char *s)
{
    for (int i = 0; i < N_SLOTS; i++)
        if (strcmp(s, slot_names[i]) == 0) return i;
    return -1;
}

/* One "slot:colour:shape" item; s is modified. */
static int parse_object(char *s, prompt_t *p, const char *where)
{
    char *colour = strchr(s, ':');
    char *shape = colour ? strchr(colour + 1, ':') : NULL;
    if (!shape) {
        fprintf(stderr, "%s: %s: object '%s' is not slot:colour:shape\n", PROG, where, s);
        return -1;
    }
    *colour++ = '\0';
    *shape++ = '\0';
    int si = slot_index(s), ci = colour_index(colour), hi = shape_index(shape);
    if (si < 0 || ci < 0 || hi < 0) {
        fprintf(stderr, "%s: %s: unknown %s '%s'\n", PROG, where,
                si < 0 ? "slot" : ci < 0 ? "colour" : "shape",
                si < 0 ? s : ci < 0 ? colour : shape);
        return -1;
    }
    if (p->colour[si] >= 0) {
        fprintf(stderr, "%s: %s: slot '%s' named twice\n", PROG, where, s);
        return -1;
    }
    p->colour[si] = ci;
    p->shape[si] = hi;
    return 0;
}

/* Splits line (modified) at tabs into at most n fields; returns the count. */
static int split_tabs(char *line, char **fields, int n)
{
    int k = 0;
    while (k < n) {
        fields[k++] = line;
        char *tab = strchr(line, '\t');
        if (!tab) break;
        *tab = '\0';
        line = tab + 1;
    }
    return k;
}

static int parse_prompt_line(char *line, prompt_t *p, const char *where)
{
    char *f[5];
    if (split_tabs(line, f, 5) != 5) {
        fprintf(stderr, "%s: %s: expected 5 tab-separated fields\n", PROG, where);
        return -1;
    }
    memset(p, 0, sizeof(*p));
    for (int i = 0; i < N_SLOTS; i++) p->colour[i] = p->shape[i] = -1;
    size_t id_len = strlen(f[0]);
    if (id_len == 0 || id_len >= sizeof(p->id) || strchr(f[0], '/') || f[0][0] == '.') {
        fprintf(stderr, "%s: %s: id '%s' must be 1..%zu characters, without '/' or a leading '.'\n",
                PROG, where, f[0], sizeof(p->id) - 1);
        return -1;
    }
    memcpy(p->id, f[0], id_len + 1);
    if (strcmp(f[1], "en") != 0 && strcmp(f[1], "zh") != 0) {
        fprintf(stderr, "%s: %s: language '%s' is neither en nor zh\n", PROG, where, f[1]);
        return -1;
    }
    p->zh = strcmp(f[1], "zh") == 0;
    p->background = colour_index(f[2]);
    if (p->background < 0) {
        fprintf(stderr, "%s: %s: unknown background colour '%s'\n", PROG, where, f[2]);
        return -1;
    }
    int n_objects = 0;
    for (char *item = strtok(f[3], ","); item; item = strtok(NULL, ",")) {
        if (parse_object(item, p, where) != 0) return -1;
        n_objects++;
    }
    if (n_objects == 0) {
        fprintf(stderr, "%s: %s: no objects\n", PROG, where);
        return -1;
    }
    return 0;
}

/* Reads the whole prompt list; *out is malloc'd. */
static int read_prompts(const char *path, prompt_t **out, int *n_out)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: %s: cannot open: %s\n", PROG, path, strerror(errno));
        return -1;
    }
    prompt_t *list = NULL;
    int n = 0, rc = 0;
    char line[LINE_MAX_BYTES];
    for (int lineno = 1; fgets(line, sizeof(line), f); lineno++) {
        char where[512];
        snprintf(where, sizeof(where), "%s:%d", path, lineno);
        size_t len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
            fprintf(stderr, "%s: %s: line longer than %d bytes\n", PROG, where, LINE_MAX_BYTES - 2);
            rc = -1;
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0 || line[0] == '#') continue;
        if (n == MAX_PROMPTS) {
            fprintf(stderr, "%s: %s: more than %d prompts\n", PROG, where, MAX_PROMPTS);
            rc = -1;
            break;
        }
        prompt_t *grown = realloc(list, (size_t)(n + 1) * sizeof(*list));
        if (!grown) {
            fprintf(stderr, "%s: out of memory\n", PROG);
            rc = -1;
            break;
        }
        list = grown;
        if (parse_prompt_line(line, &list[n], where) != 0) {
            rc = -1;
            break;
        }
        n++;
    }
    if (rc == 0 && ferror(f)) {
        fprintf(stderr, "%s: %s: read error\n", PROG, path);
        rc = -1;
    }
    if (rc == 0 && n == 0) {
        fprintf(stderr, "%s: %s: no prompts\n", PROG, path);
        rc = -1;
    }
    fclose(f);
    if (rc != 0) {
        free(list);
        return -1;
    }
    *out = list;
    *n_out = n;
    return 0;
}

/* Mean colour of the rectangle [x0, x1) x [y0, y1) given in 64 x 64
 * coordinates, read at the image's own scale. */
static void mean_rgb(const image_t *im, int x0, int y0, int x1, int y1, double out[3])
{
    int px0 = x0 * im->w / REF_SIZE, px1 = x1 * im->w / REF_SIZE;
    int py0 = y0 * im->h / REF_SIZE, py1 = y1 * im->h / REF_SIZE;
    if (px1 <= px0) px1 = px0 + 1;
    if (py1 <= py0) py1 = py0 + 1;
    double sum[3] = {0, 0, 0};
    for (int y = py0; y < py1; y++)
        for (int x = px0; x < px1; x++)
            for (int c = 0; c < 3; c++) sum[c] += im->rgb[((size_t)y * im->w + x) * 3 + c];
    double n = (double)(px1 - px0) * (py1 - py0);
    for (int c = 0; c < 3; c++) out[c] = sum[c] / n;
}

static double dist2(const double a[3], const double b[3])
{
    double d = 0;
    for (int c = 0; c < 3; c++) d += (a[c] - b[c]) * (a[c] - b[c]);
    return d;
}

static int nearest_colour(const double rgb[3])
{
    int best = 0;
    for (int i = 1; i < N_COLOURS; i++)
        if (dist2(rgb, palette[i].rgb) < dist2(rgb, palette[best].rgb)) best = i;
    return best;
}

/* Fraction of the pixels of [x0, x1) x [y0, y1) (64 x 64 coordinates,
 * 1-pixel cells) nearer to fg than to bg. */
static double fill_fraction(const image_t *im, int x0, int y0, int x1, int y1, const double fg[3],
                            const double bg[3])
{
    int inside = 0, total = 0;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) {
            double px[3];
            mean_rgb(im, x, y, x + 1, y + 1, px);
            inside += dist2(px, fg) < dist2(px, bg);
            total++;
        }
    return (double)inside / total;
}

static int classify_shape(const image_t *im, int slot, const double fg[3], const double bg[3])
{
    int cx = slot_x[slot], cy = SLOT_Y;
    int x0 = cx - BOX_HALF, x1 = cx + BOX_HALF + 1, y0 = cy - BOX_HALF, y1 = cy + BOX_HALF + 1;
    double fill = fill_fraction(im, x0, y0, x1, y1, fg, bg);
    double top = (fill_fraction(im, x0, y0, x0 + CORNER, y0 + CORNER, fg, bg) +
                  fill_fraction(im, x1 - CORNER, y0, x1, y0 + CORNER, fg, bg)) / 2;
    double bottom = (fill_fraction(im, x0, y1 - CORNER, x0 + CORNER, y1, fg, bg) +
                     fill_fraction(im, x1 - CORNER, y1 - CORNER, x1, y1, fg, bg)) / 2;
    int best = -1;
    double best_d = 0;
    for (int i = 0; i < N_SHAPES; i++) {
        double d = (fill - shapes[i].fill) * (fill - shapes[i].fill) +
                   (top - shapes[i].top) * (top - shapes[i].top) +
                   (bottom - shapes[i].bottom) * (bottom - shapes[i].bottom);
        if (best < 0 || d < best_d) {
            best = i;
            best_d = d;
        }
    }
    return best;
}

static void count(tally_t *t, int attr, int zh, int ok)
{
    t->total[attr][zh]++;
    t->ok[attr][zh] += ok;
}

/* Scores one image; appends what was wrong to why. Returns 1 when fully correct. */
static int score_image(const image_t *im, const prompt_t *p, tally_t *t, char *why, size_t why_len)
{
    double corners[4][3], bg[3] = {0, 0, 0};
    const int e = REF_SIZE - BG_PATCH;
    mean_rgb(im, 0, 0, BG_PATCH, BG_PATCH, corners[0]);
    mean_rgb(im, e, 0, REF_SIZE, BG_PATCH, corners[1]);
    mean_rgb(im, 0, e, BG_PATCH, REF_SIZE, corners[2]);
    mean_rgb(im, e, e, REF_SIZE, REF_SIZE, corners[3]);
    for (int k = 0; k < 4; k++)
        for (int c = 0; c < 3; c++) bg[c] += corners[k][c] / 4;
    int all_ok = 1;
    size_t used = 0;
    why[0] = '\0';
#define WHY(...) \
    (used += (size_t)snprintf(why + used, used < why_len ? why_len - used : 0, __VA_ARGS__), \
     used = used < why_len ? used : why_len)

    int got_bg = nearest_colour(bg);
    int ok = got_bg == p->background;
    count(t, A_BACKGROUND, p->zh, ok);
    if (!ok) WHY(" background %s->%s;", palette[p->background].name, palette[got_bg].name);
    all_ok &= ok;

    for (int s = 0; s < N_SLOTS; s++) {
        double centre[3];
        mean_rgb(im, slot_x[s] - 2, SLOT_Y - 1, slot_x[s] + 3, SLOT_Y + 4, centre);
        int got = nearest_colour(centre);
        if (p->colour[s] < 0) {
            /* Against the background the image has, so that a wrong
             * background is one error, not one per empty slot too. */
            ok = got == got_bg;
            count(t, A_EMPTY, p->zh, ok);
            if (!ok) WHY(" %s: %s where empty;", slot_names[s], palette[got].name);
            all_ok &= ok;
            continue;
        }
        ok = got == p->colour[s];
        count(t, A_COLOUR, p->zh, ok);
        if (!ok) WHY(" %s: colour %s->%s;", slot_names[s], palette[p->colour[s]].name, palette[got].name);
        all_ok &= ok;
        int shape = classify_shape(im, s, centre, bg);
        ok = shape == p->shape[s];
        count(t, A_SHAPE, p->zh, ok);
        if (!ok) WHY(" %s: shape %s->%s;", slot_names[s], shapes[p->shape[s]].name, shapes[shape].name);
        all_ok &= ok;
    }
#undef WHY
    count(t, A_FULL, p->zh, all_ok);
    return all_ok;
}

static double pct(int ok, int total)
{
    return total ? 100.0 * ok / total : 0.0;
}

static void print_summary(const tally_t *t)
{
    printf("%-14s %15s %15s %15s\n", "attribute", "en", "zh", "all");
    for (int a = 0; a < N_ATTRS; a++) {
        printf("%-14s", attr_names[a]);
        for (int l = 0; l < 3; l++) {
            int ok = l < 2 ? t->ok[a][l] : t->ok[a][0] + t->ok[a][1];
            int total = l < 2 ? t->total[a][l] : t->total[a][0] + t->total[a][1];
            char cell[32];
            snprintf(cell, sizeof(cell), "%d/%d %5.1f%%", ok, total, pct(ok, total));
            printf(" %15s", cell);
        }
        printf("\n");
    }
}

static int evaluate(const prompt_t *prompts, int n, const char *dir, int quiet, tally_t *t)
{
    for (int i = 0; i < n; i++) {
        const prompt_t *p = &prompts[i];
        char path[4096];
        if ((size_t)snprintf(path, sizeof(path), "%s/%s.png", dir, p->id) >= sizeof(path)) {
            fprintf(stderr, "%s: %s: image path too long\n", PROG, dir);
            return -1;
        }
        image_t im;
        uint8_t *rgb = NULL;
        sdc_error_t err;
        if (sdc_image_load(path, MAX_IMAGE_PIXELS, &rgb, &im.w, &im.h, &err) != SDC_OK) {
            fprintf(stderr, "%s: %s\n", PROG, err.msg);
            return -1;
        }
        if (im.w < REF_SIZE || im.h < REF_SIZE) {
            fprintf(stderr, "%s: %s: %dx%d, smaller than the %dx%d the checks are made for\n", PROG,
                    path, im.w, im.h, REF_SIZE, REF_SIZE);
            free(rgb);
            return -1;
        }
        im.rgb = rgb;
        char why[512];
        int ok = score_image(&im, p, t, why, sizeof(why));
        free(rgb);
        if (!quiet) printf("%-8s %s  %s%s\n", p->id, p->zh ? "zh" : "en", ok ? "ok" : "FAIL", why);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        {"prompts", required_argument, NULL, 'p'},
        {"images", required_argument, NULL, 'i'},
        {"min-accuracy", required_argument, NULL, 'm'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *prompts_path = NULL, *dir = NULL;
    double min_accuracy = 0;
    int quiet = 0, c;
    while ((c = getopt_long(argc, argv, "p:i:m:qh", long_opts, NULL)) != -1) {
        switch (c) {
        case 'p': prompts_path = optarg; break;
        case 'i': dir = optarg; break;
        case 'm':
            if (sdc_cli_parse_double(PROG, "--min-accuracy", optarg, 0, 100, &min_accuracy) != 0)
                return EXIT_USAGE;
            break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", PROG, argv[optind]);
        return EXIT_USAGE;
    }
    if (!prompts_path || !dir) {
        fprintf(stderr, "%s: --prompts and --images are required (see --help)\n", PROG);
        return EXIT_USAGE;
    }
    prompt_t *prompts = NULL;
    int n = 0;
    if (read_prompts(prompts_path, &prompts, &n) != 0) return 1;
    tally_t t;
    memset(&t, 0, sizeof(t));
    int rc = evaluate(prompts, n, dir, quiet, &t);
    free(prompts);
    if (rc != 0) return 1;
    print_summary(&t);
    double full = pct(t.ok[A_FULL][0] + t.ok[A_FULL][1], t.total[A_FULL][0] + t.total[A_FULL][1]);
    if (full < min_accuracy) {
        fprintf(stderr, "%s: %.1f%% of the prompts fully correct, under --min-accuracy %g\n", PROG,
                full, min_accuracy);
        return 1;
    }
    return 0;
}
