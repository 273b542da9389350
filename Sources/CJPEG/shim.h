#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <turbojpeg.h>
#include <jpeglib.h>

// libjpeg-turbo's TurboJPEG API (Debian: libturbojpeg0-dev), wrapped so that Swift sees one call.

/// Decodes a JPEG held in memory to 8-bit pixels, rows top to bottom: greyscale files as 1 channel,
/// every other colour space as RGB (3 channels), with libjpeg's defaults (accurate integer DCT,
/// fancy upsampling), which are Pillow's. On success returns 0 and sets *pixels (malloc'ed, free
/// with free()), *width, *height and *channels. On failure returns -1 and copies TurboJPEG's
/// message into message (at most message_size bytes, NUL-terminated).
static inline int cnn_jpeg_decode(const unsigned char *bytes, unsigned long count, unsigned char **pixels,
                                  int *width, int *height, int *channels,
                                  char *message, size_t message_size) {
    tjhandle handle = tjInitDecompress();
    if (handle == NULL) {
        strncpy(message, tjGetErrorStr2(NULL), message_size - 1);
        message[message_size - 1] = 0;
        return -1;
    }
    int subsampling = 0, colorspace = 0;
    if (tjDecompressHeader3(handle, bytes, count, width, height, &subsampling, &colorspace) != 0) {
        strncpy(message, tjGetErrorStr2(handle), message_size - 1);
        message[message_size - 1] = 0;
        tjDestroy(handle);
        return -1;
    }
    int gray = colorspace == TJCS_GRAY;
    *channels = gray ? 1 : 3;
    size_t size = (size_t)(*width) * (size_t)(*height) * (size_t)(*channels);
    unsigned char *buffer = malloc(size > 0 ? size : 1);
    if (buffer == NULL) {
        strncpy(message, "out of memory", message_size - 1);
        message[message_size - 1] = 0;
        tjDestroy(handle);
        return -1;
    }
    // TJFLAG_STOPONWARNING: a truncated or damaged file is an error, not a grey-padded image.
    if (tjDecompress2(handle, bytes, count, buffer, *width, 0, *height, gray ? TJPF_GRAY : TJPF_RGB,
                      TJFLAG_STOPONWARNING) != 0) {
        strncpy(message, tjGetErrorStr2(handle), message_size - 1);
        message[message_size - 1] = 0;
        free(buffer);
        tjDestroy(handle);
        return -1;
    }
    tjDestroy(handle);
    *pixels = buffer;
    return 0;
}

/// Encodes 8-bit grey (channels 1) or RGB (channels 3) pixels as a JPEG in memory with the given
/// quality (1-100), colour with the given TurboJPEG chroma subsampling (TJSAMP_420 is Pillow's
/// default), baseline or progressive. On success returns 0 and sets *bytes (free with tjFree())
/// and *count.
static inline int cnn_jpeg_encode(const unsigned char *pixels, int width, int height, int channels, int quality,
                                  int subsampling, int progressive, unsigned char **bytes, unsigned long *count,
                                  char *message, size_t message_size) {
    tjhandle handle = tjInitCompress();
    if (handle == NULL) {
        strncpy(message, tjGetErrorStr2(NULL), message_size - 1);
        message[message_size - 1] = 0;
        return -1;
    }
    *bytes = NULL;
    *count = 0;
    if (tjCompress2(handle, pixels, width, 0, height, channels == 1 ? TJPF_GRAY : TJPF_RGB, bytes, count,
                    channels == 1 ? TJSAMP_GRAY : subsampling, quality, progressive ? TJFLAG_PROGRESSIVE : 0) != 0) {
        strncpy(message, tjGetErrorStr2(handle), message_size - 1);
        message[message_size - 1] = 0;
        tjDestroy(handle);
        return -1;
    }
    tjDestroy(handle);
    return 0;
}

static inline void cnn_jpeg_free(unsigned char *bytes) { tjFree(bytes); }

// libjpeg's own API (Debian: libjpeg62-turbo-dev), for what TurboJPEG 2.1 cannot do: decode only
// a rectangle of the image. Rows above it are skipped (entropy-decoded, never inverse-DCT'd,
// upsampled or colour-converted), rows below it are never read, and columns outside it are cut
// at the iMCU boundaries left and right of it (jpeg_crop_scanline). A margin of one pixel on
// every side keeps the fancy upsampling of the wanted pixels the same as in a full decode (the
// region's own edge pixels are upsampled as image edges); the margin is decoded and dropped.

#define CNN_JPEG_ROWS 16

/// One reusable decompressor; not for two threads at once.
typedef struct cnn_jpeg_reader {
    struct jpeg_decompress_struct info;
    struct jpeg_error_mgr errors;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    unsigned char *row;
    size_t row_capacity;
} cnn_jpeg_reader;

static void cnn_jpeg_reader_error_exit(j_common_ptr info) {
    cnn_jpeg_reader *reader = (cnn_jpeg_reader *)info->client_data;
    (*info->err->format_message)(info, reader->message);
    longjmp(reader->jump, 1);
}

static void cnn_jpeg_reader_emit_message(j_common_ptr info, int level) {
    // Level -1 is a warning about corrupt data that libjpeg would paper over with grey: an error
    // here, as TJFLAG_STOPONWARNING makes it for cnn_jpeg_decode. Other levels are traces.
    if (level < 0) cnn_jpeg_reader_error_exit(info);
}

/// A new reader, or NULL when out of memory.
static inline cnn_jpeg_reader *cnn_jpeg_reader_create(void) {
    cnn_jpeg_reader *reader = calloc(1, sizeof(cnn_jpeg_reader));
    if (reader == NULL) return NULL;
    reader->info.err = jpeg_std_error(&reader->errors);
    reader->errors.error_exit = cnn_jpeg_reader_error_exit;
    reader->errors.emit_message = cnn_jpeg_reader_emit_message;
    reader->info.client_data = reader;
    if (setjmp(reader->jump)) {
        free(reader);
        return NULL;
    }
    jpeg_create_decompress(&reader->info);
    return reader;
}

static inline void cnn_jpeg_reader_destroy(cnn_jpeg_reader *reader) {
    jpeg_destroy_decompress(&reader->info);
    free(reader->row);
    free(reader);
}

/// The last error's text.
static inline const char *cnn_jpeg_reader_message(const cnn_jpeg_reader *reader) { return reader->message; }

/// Reads the header of the JPEG in bytes (which must outlive the decode) and sets width, height
/// and channels (1 for greyscale files, 3 otherwise). Returns 0; 1 for a colour space this reader
/// does not convert as TurboJPEG does (CMYK, YCCK: decode those with cnn_jpeg_decode); -1 on an
/// error (cnn_jpeg_reader_message).
static inline int cnn_jpeg_reader_open(cnn_jpeg_reader *reader, const unsigned char *bytes, unsigned long count,
                                       int *width, int *height, int *channels) {
    if (setjmp(reader->jump)) {
        jpeg_abort_decompress(&reader->info);
        return -1;
    }
    jpeg_abort_decompress(&reader->info);
    jpeg_mem_src(&reader->info, bytes, count);
    jpeg_read_header(&reader->info, TRUE);
    J_COLOR_SPACE space = reader->info.jpeg_color_space;
    *width = (int)reader->info.image_width;
    *height = (int)reader->info.image_height;
    *channels = space == JCS_GRAYSCALE ? 1 : 3;
    if (space != JCS_GRAYSCALE && space != JCS_YCbCr && space != JCS_RGB) return 1;
    // libjpeg's defaults otherwise (accurate integer DCT, fancy upsampling): TurboJPEG's and Pillow's.
    reader->info.out_color_space = space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
    return 0;
}

/// Decodes columns left..<left+columns of rows top..<top+rows of the file opened last (the
/// rectangle must lie inside the image) into output, rows of columns * channels bytes. Returns 0,
/// or -1 on an error (cnn_jpeg_reader_message).
static inline int cnn_jpeg_reader_decode(cnn_jpeg_reader *reader, int left, int top, int columns, int rows,
                                         unsigned char *output) {
    struct jpeg_decompress_struct *info = &reader->info;
    if (setjmp(reader->jump)) {
        jpeg_abort_decompress(info);
        return -1;
    }
    jpeg_start_decompress(info);
    int width = (int)info->output_width, height = (int)info->output_height, channels = info->output_components;
    if (left < 0 || top < 0 || columns < 1 || rows < 1 || left + columns > width || top + rows > height) {
        snprintf(reader->message, sizeof reader->message, "region %dx%d at (%d, %d) outside the %dx%d image",
                 columns, rows, left, top, width, height);
        jpeg_abort_decompress(info);
        return -1;
    }
    int x0 = left > 0 ? left - 1 : 0, x1 = left + columns < width ? left + columns + 1 : width;
    // A 4:2:0 region two pixels wide (one chroma column) comes out wrong from libjpeg-turbo 2.1's
    // upsampling: regions are at least 16 pixels wide.
    if (x1 - x0 < 16) x1 = x0 + 16 < width ? x0 + 16 : width;
    JDIMENSION offset = (JDIMENSION)x0, span = (JDIMENSION)(x1 - x0);
    // Cut at the image's right edge, libjpeg-turbo 2.1 upsamples a 4:2:0 file's last chroma
    // column from the encoder's padding instead of repeating it (a full decode repeats it): such
    // regions are decoded full width.
    if (x1 < width) {
        jpeg_crop_scanline(info, &offset, &span);
    } else {
        offset = 0;
        span = (JDIMENSION)width;
    }
    // Rows are read CNN_JPEG_ROWS at a time (one call per row costs libjpeg a copy of each
    // upsampled row pair and the call itself) into reader->row, and the wanted columns copied out.
    size_t row_bytes = (size_t)span * (size_t)channels, needed = row_bytes * CNN_JPEG_ROWS;
    if (needed > reader->row_capacity) {
        unsigned char *row = realloc(reader->row, needed);
        if (row == NULL) {
            snprintf(reader->message, sizeof reader->message, "out of memory");
            jpeg_abort_decompress(info);
            return -1;
        }
        reader->row = row;
        reader->row_capacity = needed;
    }
    int y0 = top > 0 ? top - 1 : 0, y1 = top + rows < height ? top + rows + 1 : height;
    if (y0 > 0) jpeg_skip_scanlines(info, (JDIMENSION)y0);
    size_t shift = (size_t)(left - (int)offset) * (size_t)channels, length = (size_t)columns * (size_t)channels;
    JSAMPROW batch[CNN_JPEG_ROWS];
    for (int k = 0; k < CNN_JPEG_ROWS; k++) batch[k] = reader->row + (size_t)k * row_bytes;
    for (int y = y0; y < y1;) {
        int wanted = y1 - y < CNN_JPEG_ROWS ? y1 - y : CNN_JPEG_ROWS;
        int got = (int)jpeg_read_scanlines(info, batch, (JDIMENSION)wanted);
        if (got < 1) {
            snprintf(reader->message, sizeof reader->message, "libjpeg returned no row %d", y);
            jpeg_abort_decompress(info);
            return -1;
        }
        for (int k = 0; k < got; k++, y++) {
            if (y >= top && y < top + rows) memcpy(output + (size_t)(y - top) * length, batch[k] + shift, length);
        }
    }
    // The rows below are never read: abort rather than finish.
    jpeg_abort_decompress(info);
    return 0;
}
