package vigie;

import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.Base64;
import javax.crypto.Cipher;
import javax.crypto.Mac;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;
import org.apache.hadoop.conf.Configuration;
import org.apache.parquet.crypto.KeyAccessDeniedException;
import org.apache.parquet.crypto.keytools.KmsClient;

/**
 * vigie's key wrapper for Parquet modular encryption: data keys are wrapped with AES-256-GCM
 * under a master key derived (HMAC-SHA256) from the access token, one per master key id.
 * The token is derived by vigie from the store key of its keyfile; nothing here is stored.
 * vigie.spark.kms has the same wrapper in Python, for pyarrow.
 */
public class VigieKms implements KmsClient {
  private byte[] token;
  private final SecureRandom random = new SecureRandom();

  @Override
  public void initialize(Configuration conf, String kmsInstanceID, String kmsInstanceURL,
      String accessToken) throws KeyAccessDeniedException {
    if (accessToken == null || accessToken.length() != 64 || accessToken.equals("DEFAULT")) {
      throw new KeyAccessDeniedException("vigie: no store key given to the Parquet KMS client");
    }
    token = accessToken.getBytes(StandardCharsets.US_ASCII);
  }

  private SecretKeySpec master(String id) throws KeyAccessDeniedException {
    try {
      Mac mac = Mac.getInstance("HmacSHA256");
      mac.init(new SecretKeySpec(token, "HmacSHA256"));
      byte[] key = mac.doFinal(("vigie parquet master key: " + id).getBytes(StandardCharsets.UTF_8));
      return new SecretKeySpec(key, "AES");
    } catch (Exception e) {
      throw new KeyAccessDeniedException("vigie: cannot derive the master key", e);
    }
  }

  @Override
  public String wrapKey(byte[] keyBytes, String masterKeyIdentifier)
      throws KeyAccessDeniedException {
    try {
      byte[] iv = new byte[12];
      random.nextBytes(iv);
      Cipher cipher = Cipher.getInstance("AES/GCM/NoPadding");
      cipher.init(Cipher.ENCRYPT_MODE, master(masterKeyIdentifier), new GCMParameterSpec(128, iv));
      cipher.updateAAD(masterKeyIdentifier.getBytes(StandardCharsets.UTF_8));
      byte[] sealed = cipher.doFinal(keyBytes);
      byte[] out = new byte[12 + sealed.length];
      System.arraycopy(iv, 0, out, 0, 12);
      System.arraycopy(sealed, 0, out, 12, sealed.length);
      return Base64.getEncoder().encodeToString(out);
    } catch (KeyAccessDeniedException e) {
      throw e;
    } catch (Exception e) {
      throw new KeyAccessDeniedException("vigie: cannot wrap a data key", e);
    }
  }

  @Override
  public byte[] unwrapKey(String wrappedKey, String masterKeyIdentifier)
      throws KeyAccessDeniedException {
    try {
      byte[] in = Base64.getDecoder().decode(wrappedKey);
      Cipher cipher = Cipher.getInstance("AES/GCM/NoPadding");
      cipher.init(Cipher.DECRYPT_MODE, master(masterKeyIdentifier),
          new GCMParameterSpec(128, in, 0, 12));
      cipher.updateAAD(masterKeyIdentifier.getBytes(StandardCharsets.UTF_8));
      return cipher.doFinal(in, 12, in.length - 12);
    } catch (Exception e) {
      throw new KeyAccessDeniedException(
          "vigie: the store key does not open this dataset (wrong keyfile?)", e);
    }
  }
}
