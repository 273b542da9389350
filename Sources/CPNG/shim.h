#include <png.h>
#include <stdlib.h>
#include <string.h>

// libpng's simplified API, wrapped so that Swift never sees its function-like macros
// (PNG_IMAGE_VERSION, PNG_IMAGE_SIZE, PNG_IMAGE_ROW_STRIDE).

/// Reads a PNG file as 8-bit greyscale (channels 1) or RGB (channels 3), converting whatever the
/// file holds (palette, 16-bit, alpha composed over black). On success returns 0 and sets *pixels
/// (malloc'ed, free with free()), *width and *height. On failure returns -1 and copies libpng's
/// message into message (at most message_size bytes, NUL-terminated).
static inline int cnn_png_read(const char *path, int channels, unsigned char **pixels,
                               unsigned int *width, unsigned int *height,
                               char *message, size_t message_size) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&image, path)) {
        strncpy(message, image.message, message_size - 1);
        message[message_size - 1] = 0;
        return -1;
    }
    image.format = channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    size_t size = PNG_IMAGE_SIZE(image);
    unsigned char *buffer = malloc(size > 0 ? size : 1);
    if (buffer == NULL) {
        png_image_free(&image);
        strncpy(message, "out of memory", message_size - 1);
        message[message_size - 1] = 0;
        return -1;
    }
    png_color black = {0, 0, 0};
    if (!png_image_finish_read(&image, &black, buffer, 0, NULL)) {
        strncpy(message, image.message, message_size - 1);
        message[message_size - 1] = 0;
        free(buffer);
        return -1;
    }
    *pixels = buffer;
    *width = image.width;
    *height = image.height;
    return 0;
}

/// Reads a PNG held in memory as it is stored: greyscale files as grey + alpha (channels 2),
/// colour and palette files as RGBA (channels 4), 8 bits each, alpha 255 where the file has none.
/// Callers drop or use the alpha as they need (Pillow's convert("RGB") drops it). On success
/// returns 0 and sets *pixels (malloc'ed, free with free()), *width, *height and *channels; on
/// failure -1 with libpng's message.
static inline int cnn_png_decode_native(const unsigned char *bytes, size_t count, unsigned char **pixels,
                                        unsigned int *width, unsigned int *height, int *channels,
                                        char *message, size_t message_size) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&image, bytes, count)) {
        strncpy(message, image.message, message_size - 1);
        message[message_size - 1] = 0;
        return -1;
    }
    int colour = (image.format & PNG_FORMAT_FLAG_COLOR) != 0;
    image.format = colour ? PNG_FORMAT_RGBA : PNG_FORMAT_GA;
    size_t size = PNG_IMAGE_SIZE(image);
    unsigned char *buffer = malloc(size > 0 ? size : 1);
    if (buffer == NULL) {
        png_image_free(&image);
        strncpy(message, "out of memory", message_size - 1);
        message[message_size - 1] = 0;
        return -1;
    }
    if (!png_image_finish_read(&image, NULL, buffer, 0, NULL)) {
        strncpy(message, image.message, message_size - 1);
        message[message_size - 1] = 0;
        free(buffer);
        return -1;
    }
    *pixels = buffer;
    *width = image.width;
    *height = image.height;
    *channels = colour ? 4 : 2;
    return 0;
}

/// Encodes 8-bit grey (1), grey + alpha (2), RGB (3) or RGBA (4) pixels, rows top to bottom, as
/// PNG in memory. On success returns 0 and sets *bytes (malloc'ed, free with free()) and *count.
static inline int cnn_png_encode_any(const unsigned char *pixels, unsigned int width, unsigned int height,
                                     int channels, unsigned char **bytes, size_t *count,
                                     char *message, size_t message_size) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    image.width = width;
    image.height = height;
    image.format = channels == 4 ? PNG_FORMAT_RGBA : channels == 3 ? PNG_FORMAT_RGB
                 : channels == 2 ? PNG_FORMAT_GA : PNG_FORMAT_GRAY;
    png_alloc_size_t size = 0;
    if (!png_image_write_get_memory_size(image, size, 0, pixels, 0, NULL)) {
        strncpy(message, image.message, message_size - 1);
        message[message_size - 1] = 0;
        return -1;
    }
    unsigned char *buffer = malloc(size);
    if (buffer == NULL) {
        strncpy(message, "out of memory", message_size - 1);
        message[message_size - 1] = 0;
        return -1;
    }
    if (!png_image_write_to_memory(&image, buffer, &size, 0, pixels, 0, NULL)) {
        strncpy(message, image.message, message_size - 1);
        message[message_size - 1] = 0;
        free(buffer);
        return -1;
    }
    *bytes = buffer;
    *count = size;
    return 0;
}
